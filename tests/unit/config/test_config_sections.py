"""One declaration per setting: the root config composes the sections the parts declare, the
choices are the registries' keys, plug-ins take their section instead of defaults of their own,
and defaults that depend on another setting follow the papers."""

import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from rewards.pool import PoolConfig, VerifierPool
from rlvr.algorithms import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES
from rlvr.algorithms.advantages import AdvantageConfig, compute_advantages
from rlvr.algorithms.loss import LossConfig
from rlvr.algorithms.overlong import OverlongConfig
from rlvr.cluster import placement
from rlvr.config import Config, ConfigError, load_config
from rlvr.learner.spec import LearnerConfig, LearnerSpec
from rlvr.train.scoring import RewardSpec
from rlvr.train.tracking import LogConfig, SampleWriter, WandbConfig, WandbTracker
from rollout import dars, gates, mopps, samplers, schedules, vllm_engine
from rollout.hf_engine import HFEngine
from rollout.worker import RolloutConfig, RolloutWorker

ROOT = Path(__file__).resolve().parents[3]


def choices(model, field: str) -> set:
    return set(typing.get_args(model.model_fields[field].annotation))


def test_choices_are_the_registries_keys():
    cfg = Config.model_fields
    algorithm = cfg["algorithm"].annotation
    assert choices(algorithm, "advantage") == set(ADVANTAGES)
    assert choices(algorithm, "policy_loss") == set(POLICY_LOSSES)
    assert choices(algorithm, "aggregation") == set(AGGREGATIONS)
    assert choices(algorithm, "kl_estimator") == set(KL_ESTIMATORS)
    assert choices(samplers.SamplerConfig, "name") == set(samplers.SAMPLERS)
    assert choices(schedules.ScheduleConfig, "name") == set(schedules.SCHEDULES)
    assert choices(dars.DARSConfig, "mode") == set(dars.DEFAULT_N_MAX)
    assert choices(placement.PlacementConfig, "mode") == set(placement.MODES)


def test_the_schema_composes_the_parts_own_sections():
    sections = {name: f.annotation for name, f in Config.model_fields.items()}
    assert sections["sampler"] is samplers.SamplerConfig
    assert issubclass(samplers.SamplerConfig, mopps.MoPPSConfig)
    assert sections["schedule"] is schedules.ScheduleConfig
    assert issubclass(schedules.ScheduleConfig, dars.DARSConfig)
    assert sections["gate"] is gates.GateConfig
    assert sections["verifier"] is PoolConfig
    assert sections["learner"] is LearnerConfig
    assert sections["rollout"] is RolloutConfig
    assert RolloutConfig.model_fields["vllm"].annotation is vllm_engine.VLLMConfig
    algorithm = sections["algorithm"]
    assert issubclass(algorithm, LossConfig) and issubclass(algorithm, AdvantageConfig)
    # every loss knob is settable from a recipe (GSPO's clip range included)
    assert set(LossConfig.model_fields) <= set(algorithm.model_fields)
    cfg = load_config(None, ["algorithm.gspo_clip_low=1e-3", "algorithm.gspo_clip_high=2e-3"])
    spec = LearnerSpec.from_config(cfg, "/m")
    assert (spec.loss.gspo_clip_low, spec.loss.gspo_clip_high) == (1e-3, 2e-3)
    assert set(LossConfig.model_fields) == set(spec.loss.model_dump())


def test_every_overlong_knob_is_settable_and_reaches_its_consumer():
    """DAPO's overlong shaping (algorithm.overlong_*): each field of OverlongConfig is set from a
    recipe override and read where it acts (the reward spec; the loss filter)."""
    assert issubclass(Config.model_fields["algorithm"].annotation, OverlongConfig)
    overrides = {
        "overlong_buffer": 3,
        "overlong_penalty_factor": 0.25,
        "overlong_filter": True,
    }
    assert set(overrides) == set(OverlongConfig.model_fields)  # a new knob needs a line here
    cfg = load_config(
        None, ["rollout.max_new_tokens=12"] + [f"algorithm.{k}={v}" for k, v in overrides.items()]
    )
    assert {k: getattr(cfg.algorithm, k) for k in overrides} == overrides
    rows = [{"verifier": "arith", "rewards": [{"name": "arith", "weight": 1.0, "args": {}}]}]
    assert RewardSpec.of(cfg, rows) == RewardSpec(("arith", "overlong"), (12, 3, 0.25))
    assert RewardSpec.of(load_config(None), rows) == RewardSpec(("arith",), None)  # off
    # the filter's consumer is the controller's `trainable` (tests/unit/train/test_scoring.py)


# Each plug-in (class or function) with the config section whose fields it reads: none of those
# fields may reappear as a keyword default of its own.
PLUGINS = [
    (mopps.MoPPSSampler, mopps.MoPPSConfig),
    (samplers.UniformSampler, samplers.SamplerConfig),
    (dars.DARSSchedule, dars.DARSConfig),
    (dars.dars_extra, dars.DARSConfig),
    (gates.DynamicSampling, gates.GateConfig),
    (VerifierPool, PoolConfig),
    (vllm_engine.VLLMEngine, vllm_engine.VLLMConfig),
    (vllm_engine.engine_kwargs, vllm_engine.VLLMConfig),
    (RolloutWorker, RolloutConfig),
    (HFEngine, RolloutConfig),
    (compute_advantages, AdvantageConfig),
    (WandbTracker, WandbConfig),
    (SampleWriter, LogConfig),
]


@pytest.mark.parametrize("plugin, section", PLUGINS, ids=lambda x: getattr(x, "__name__", ""))
def test_plugins_declare_no_defaults_of_their_own(plugin, section):
    fn = plugin.__init__ if inspect.isclass(plugin) else plugin
    own = {
        name
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    fields = set(section.model_fields) | {"dtype", "trust_remote_code", "batch_size"}
    assert not own & fields, f"{plugin.__name__} repeats defaults of {section.__name__}"


def test_pool_default_is_the_configs():
    assert PoolConfig().num_workers == load_config(None).verifier.num_workers == 2


def test_advantage_defaults_follow_the_papers():
    assert load_config(None).algorithm.std_normalize is True  # GRPO divides by the std
    assert load_config(None, ["algorithm.advantage=rloo"]).algorithm.std_normalize is False
    explicit = load_config(None, ["algorithm.advantage=rloo", "algorithm.std_normalize=true"])
    assert explicit.algorithm.std_normalize is True
    # RLOO's paper form on one group [1, 0, 0, 1]: A_i = r_i - mean of the other three
    # = 1 - 1/3 = 2/3 for the ones, 0 - 2/3 = -2/3 for the zeros (no division by the std).
    import torch

    a = load_config(None, ["algorithm.advantage=rloo"]).algorithm
    adv, _ = compute_advantages(
        a.advantage,
        torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64),
        torch.zeros(4, dtype=torch.long),
        std_normalize=a.std_normalize,
        eps=a.eps,
    )
    torch.testing.assert_close(adv, torch.tensor([2, -2, -2, 2], dtype=torch.float64) / 3)


def test_dars_and_loss_defaults_follow_other_settings():
    cfg = load_config(None, ["schedule.name=dars", "rollout.max_new_tokens=12"])
    assert cfg.schedule.std_normalized is True and cfg.schedule.n_max == 64
    assert cfg.algorithm.max_len == 12
    drgrpo = load_config(None, ["schedule.name=dars", "algorithm.std_normalize=false"])
    assert drgrpo.schedule.std_normalized is False
    et = load_config(None, ["schedule.name=dars", "schedule.mode=et", "algorithm.max_len=3"])
    assert et.schedule.n_max == 32 and et.algorithm.max_len == 3
    with pytest.raises(ConfigError, match=r"^schedule.n_max=8: DARS needs n_max > rollout.n=8"):
        load_config(None, ["schedule.name=dars", "schedule.n_max=8"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("sampler.low=0.9", "sampler: low=0.9, high=0.7: low must be < high"),
        ("sampler.prior_file=/no/p.jsonl", "sampler.prior_file='/no/p.jsonl': file not found"),
        ("learner.betas=[0.9]", "learner.betas=[0.9]: expected two numbers"),
        ("learner.betas=[2,0.5]",
         "learner.betas[0]=2.0 is out of range: must be <= 1.0 and >= 0.0"),
        ("algorithm.clip_low=1.0", "algorithm.clip_low=1.0 is out of range: must be < 1.0"),
        ("rollout.vllm.sleep_level=3",
         "rollout.vllm.sleep_level=3 is not allowed; choose one of: 1, 2"),
        ("rollout.vllm.tensr_parallel_size=2", "unknown key rollout.vllm.tensr_parallel_size; "
         "did you mean rollout.vllm.tensor_parallel_size?"),
        ("verifier.memory_mb=32", "verifier.memory_mb=32 is out of range: must be >= 64"),
        ("learner.lr=1e-6x", "learner.lr='1e-6x': expected float"),
        ("rewards=[{name: math, wieght: 1}]",
         "unknown key rewards[0].wieght; did you mean rewards[0].weight?"),
        ("rewards=[{weight: 1}]", "rewards[0].name is required"),
        ("rewards=[{name: overlong}]", "rewards[0].name='overlong': computed by the trainer; "
         "set algorithm.overlong_buffer (DAPO's length penalty needs token counts)"),
        ("rewards=[{name: math, weight: .inf}]",
         "rewards[0].weight=inf: Input should be a finite number"),
        ("algorithm.overlong_buffer=9", "algorithm.overlong_buffer=9: must be <= "
         "rollout.max_new_tokens=8 (the penalty ramps over the last L_c tokens)"),
        ("log.wandb.projetc=x", "unknown key log.wandb.projetc; did you mean log.wandb.project?"),
        ("data.overlong_prompts=cut",
         "data.overlong_prompts='cut' is not allowed; choose one of: drop, truncate"),
        ("data.system_prompt=Be brief.", "data.system_prompt / data.chat_template_kwargs apply "
         "to data.task=dataset; the arith task keeps its plain prompts"),
        ("learner.lora.target_modules=q_proj",
         "learner.lora.target_modules='q_proj': expected 'all-linear' or list[str]"),
        ("learner.lora.target_modules=[q_proj, 3]",
         "learner.lora.target_modules=['q_proj', 3]: expected 'all-linear' or list[str]"),
    ],
)  # fmt: skip
def test_section_errors_are_one_line(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == message


def test_yaml_reads_exponents_without_a_dot_as_numbers(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learner:\n  lr: 1e-6\nalgorithm:\n  eps: 1E-8\n")
    cfg = load_config(recipe, ["sft.lr=2e-3"])
    assert (cfg.learner.lr, cfg.algorithm.eps, cfg.sft.lr) == (1e-6, 1e-8, 2e-3)


def rlvr(*args):
    return subprocess.run(
        [sys.executable, "-m", "rlvr.cli", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_cli_prints_the_schema_and_the_resolved_config():
    schema = json.loads(rlvr("config", "--schema").stdout)
    sampler = schema["$defs"]["SamplerConfig"]["properties"]
    assert sampler["decay"]["default"] == 1.0 and sampler["decay"]["exclusiveMinimum"] == 0.0
    assert set(sampler["name"]["enum"]) == {"uniform", "mopps"}
    assert schema["$defs"]["TrainerConfig"]["additionalProperties"] is False
    proc = rlvr("config", "recipes/arith-tiny.yaml", "trainer.steps=3")
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["trainer"]["steps"] == 3 and resolved["sampler"]["name"] == "mopps"
    assert resolved["schedule"]["std_normalized"] is True and resolved["algorithm"]["max_len"] == 6
    assert load_config(None, []).model_dump().keys() == resolved.keys()
    bad = rlvr("config", "recipes/arith-tiny.yaml", "trainer.stesp=3")
    assert bad.returncode == 2
    assert bad.stderr == "rlvr: error: unknown key trainer.stesp; did you mean trainer.steps?\n"
