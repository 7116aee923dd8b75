"""Bad input to `rlvr train`: exit status 2, exactly one line on stderr naming the problem, no
run directory, and Ray never started (docs/reliability.md#bad-input).

Each case is a recipe, overrides, or a data file written for it, run through the CLI in this
process (`rlvr.cli.main`); starting Ray fails the test. The model is a directory holding only the
built-in tokenizer and a config (64 positions): preflight reads nothing else.
"""

import json

import pytest
import torch
from transformers import LlamaConfig

from rlvr import cli
from rlvr.cluster import ray_cluster
from rlvr.config import load_config
from rlvr.tasks.tiny_model import build_tokenizer
from rlvr.train.preflight import preflight

ROWS = [{"problem": f"{i}+{i}=", "answer": str(2 * i)} for i in range(10)]


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# (id, files to write {name: text}, overrides, recipe text or None for the base recipe, phrase)
# "{tmp}" in a file name, override or recipe is the test's directory.
DATASET = ["data.task=dataset", "data.train={tmp}/train.jsonl", "data.eval=['{tmp}/eval.jsonl']"]
GOOD = {"train.jsonl": jsonl(ROWS), "eval.jsonl": jsonl(ROWS[:4])}
CASES = [
    # the recipe and its overrides (the config schema)
    ("recipe-missing", {}, [], "MISSING", "recipe file not found"),
    ("recipe-not-yaml", {}, [], "a: [1, 2\n", "not valid YAML"),
    ("recipe-not-mapping", {}, [], "- 1\n- 2\n", "recipe"),
    ("unknown-section", {}, ["nosuch.key=1"], None, "nosuch"),
    ("unknown-key", {}, ["trainer.stepz=3"], None, "stepz"),
    ("override-no-equals", {}, ["trainer.steps"], None, "trainer.steps"),
    ("steps-zero", {}, ["trainer.steps=0"], None, "trainer.steps"),
    ("steps-not-int", {}, ["trainer.steps=abc"], None, "trainer.steps"),
    ("rloo-n1", {}, ["algorithm.advantage=rloo", "rollout.n=1"], None, "needs n >= 2"),
    ("eval-k-over-n", {}, ["eval.k=[16]"], None, "eval.k=[16]"),
    ("model-dir-missing", {}, ["model.path=./no/such/model"], None, "directory not found"),
    ("builtin-unknown", {}, ["model.path=builtin:huge"], None, "unknown built-in model"),
    ("heads", {}, ["model.tiny.hidden_size=130"], None, "multiple of"),
    ("mini-batches", {}, ["learner.mini_batches=2"], None, "learner.mini_batches=2"),
    ("refill", {}, ["gate.refill=true", "algorithm.drop_zero_variance=false"], None, "refill"),
    ("dars-nmax", {}, ["schedule.name=dars", "schedule.n_max=2"], None, "n_max"),
    ("resume-missing", {}, ["trainer.resume=/no/such/ckpt"], None, "no such checkpoint"),
    ("resume-auto-none", {}, ["trainer.resume=auto"], None, "no run of base"),
    ("overlong-buffer", {}, ["algorithm.overlong_buffer=9"], None, "overlong_buffer=9"),
    ("memory-mb-schema", {}, ["verifier.memory_mb=20"], None, "memory_mb"),
    ("timeout-zero", {}, ["verifier.timeout_s=0"], None, "timeout_s"),
    ("arith-level", {}, ["data.arith.mix={'9:%:9': 1}"], None, "data.arith.mix"),
    ("train-empty-name", {}, ["data.task=dataset", "data.train="], None, "data.train is empty"),
    ("train-file-missing", {}, [*DATASET[:1], "data.train={tmp}/nope.jsonl"], None, "not found"),
    # positions
    ("new-tokens-over-positions", {}, ["rollout.max_new_tokens=100"], None, "64 positions"),
    ("new-tokens-at-positions", {}, ["rollout.max_new_tokens=64"], None, "64 positions"),
    # data files
    ("jsonl-bad-line", {**GOOD, "train.jsonl": jsonl(ROWS[:1]) + "{oops\n"}, DATASET, None,
     "train.jsonl:2: not JSON"),
    ("jsonl-row-not-object", {**GOOD, "train.jsonl": jsonl(ROWS[:2]) + "[1, 2]\n"}, DATASET, None,
     "train.jsonl:3: a row must be a JSON object"),
    ("train-no-answer", {**GOOD, "train.jsonl": jsonl([{"problem": "1+1="}])}, DATASET, None,
     "train.jsonl:1: no gold answer"),
    ("eval-no-answer", {**GOOD, "eval.jsonl": jsonl([{"problem": "1+1="}])}, DATASET, None,
     "eval.jsonl:1: no gold answer"),
    ("eval-no-prompt-key", {**GOOD, "train.jsonl": jsonl([{"q": "1+1=", "answer": "2"}] * 9)},
     [*DATASET, "data.prompt_key=q"], None, "eval.jsonl:1: no prompt column 'q'"),
    ("json-not-list", {**GOOD, "train.json": '{"problem": "1+1="}'},
     [*DATASET[:1], "data.train={tmp}/train.json", DATASET[2]], None, "must hold a list"),
    ("json-malformed", {**GOOD, "train.json": '[{"problem": '},
     [*DATASET[:1], "data.train={tmp}/train.json", DATASET[2]], None, "train.json:1: not JSON"),
    ("train-empty-file", {**GOOD, "train.jsonl": ""}, DATASET, None, "no rows"),
    ("train-blank-lines", {**GOOD, "train.jsonl": "\n\n \n"}, DATASET, None, "no rows"),
    ("eval-empty-file", {**GOOD, "eval.jsonl": ""}, DATASET, None, "no held-out rows"),
    ("not-utf8", {**GOOD, "train.jsonl": "\udcff"}, DATASET, None, "not UTF-8"),
    ("messages-bad", {**GOOD, "train.jsonl": jsonl([{"messages": [{"role": "x"}], "answer": "1"}])},
     DATASET, None, "messages[0] must be"),
    ("unknown-chars", {**GOOD, "train.jsonl": jsonl([{"problem": "what?", "answer": "1"}] * 9)},
     DATASET, None, "characters the tokenizer does not know"),
    ("unknown-verifier", GOOD, [*DATASET, "data.verifier=nosuch"], None, "unknown verifier"),
    ("template-no-prompt", GOOD, [*DATASET, "data.template='Q: {question}'"], None,
     "must contain {prompt}"),
    ("prompts-per-step-arith", {}, ["trainer.prompts_per_step=20000"], None,
     "only 80 prompts"),
    ("prompts-per-step-file", GOOD, [*DATASET, "trainer.prompts_per_step=11"], None,
     "only 10 prompts"),
    # plug-ins and the verifier pool
    ("plugin-missing-module", {}, ["verifier.plugins=['no_such_module_xyz:f']"], None,
     "No module named 'no_such_module_xyz'"),
    ("plugin-missing-function", {}, ["verifier.plugins=['json:no_such_function']"], None,
     "verifier.plugins: 'json:no_such_function'"),
    ("plugin-malformed", {}, ["verifier.plugins=['nocolon']"], None, "verifier.plugins"),
    ("memory-cap-impossible", {}, ["verifier.num_workers=1", "verifier.memory_mb=64"], None,
     "verifier.memory_mb=64: "),
    # output and machine
    ("output-dir-is-file", {"afile": "x"}, ["trainer.output_dir={tmp}/afile"], None,
     "is a file, not a directory"),
    ("output-dir-under-file", {"afile": "x"}, ["trainer.output_dir={tmp}/afile/runs"], None,
     "is a file, not a directory"),
    ("output-dir-unwritable", {}, ["trainer.output_dir=/proc/rlvr-runs"], None,
     "cannot write in /proc"),
    ("learner-gpus-absent", {}, ["learner.gpus_per_worker=1"], None,
     "learner.gpus_per_worker=1: no CUDA GPU"),
    ("rollout-gpus-absent", {}, ["rollout.gpus_per_worker=1"], None,
     "rollout.gpus_per_worker=1: no CUDA GPU"),
    ("gpus-absent-unplanned", {}, ["learner.gpus_per_worker=1", "model.path=nobody/no-model"],
     None, "learner.gpus_per_worker=1: no CUDA GPU"),  # the memory plan is skipped on stdout
]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    build_tokenizer().save_pretrained(path)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    LlamaConfig(max_position_embeddings=64, vocab_size=32, **small).save_pretrained(path)
    return path


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Ray started")

    monkeypatch.setattr(ray_cluster, "init_ray", refuse)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # GPUs absent, even here


def base_recipe(tmp_path, model_dir) -> str:
    text = (
        f"model: {{path: {model_dir}}}\n"
        "data: {arith: {mix: {'1:+:2': 1}, train_size: 80, heldout_size: 9}}\n"
        "eval: {num_problems: 9, n: 2, k: [1, 2]}\n"
        "rollout: {n: 2, max_new_tokens: 4}\n"
        f"trainer: {{steps: 1, prompts_per_step: 8, output_dir: {tmp_path}/runs}}\n"
        "verifier: {num_workers: 0}\n"
    )
    path = tmp_path / "base.yaml"
    path.write_text(text)
    return str(path)


def test_the_base_recipe_passes_preflight(tmp_path, model_dir, no_ray):
    """So each case below fails for its own reason; the dataset form too."""
    recipe = base_recipe(tmp_path, model_dir)
    for name, text in GOOD.items():
        (tmp_path / name).write_text(text)
    for overrides in (
        [],
        [o.replace("{tmp}", str(tmp_path)) for o in DATASET] + ["data.verifier=arith"],
    ):
        checked = preflight(load_config(recipe, overrides), recipe, log=lambda *a: None)
        checked.pool.close()
        assert not checked.run_dir.exists()  # preflight creates nothing
    assert not (tmp_path / "runs").exists()


def test_eval_files_use_the_recipes_column_keys(tmp_path, model_dir, no_ray):
    recipe = base_recipe(tmp_path, model_dir)
    rows = [{"q": f"{i}+1=", "gold": str(i + 1)} for i in range(9)]
    for name in ("train.jsonl", "eval.jsonl"):
        (tmp_path / name).write_text(jsonl(rows))
    keys = ["data.prompt_key=q", "data.answer_key=gold", "data.verifier=arith"]
    cfg = load_config(recipe, [o.replace("{tmp}", str(tmp_path)) for o in DATASET] + keys)
    checked = preflight(cfg, recipe, log=lambda *a: None)
    checked.pool.close()
    assert [r["prompt"] for r in checked.data.eval_rows][:2] == ["0+1=", "1+1="]
    assert [r["answer"] for r in checked.data.eval_rows][:2] == ["1", "2"]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_status_2(case, tmp_path, model_dir, no_ray, capsys):
    _, files, overrides, recipe_text, phrase = case
    recipe = base_recipe(tmp_path, model_dir)
    if recipe_text == "MISSING":
        recipe = str(tmp_path / "missing.yaml")
    elif recipe_text is not None:
        (tmp_path / "base.yaml").write_text(recipe_text)
    for name, text in files.items():
        (tmp_path / name).write_text(text, errors="surrogateescape")
    (tmp_path / "runs").mkdir()
    argv = ["train", recipe, *(o.replace("{tmp}", str(tmp_path)) for o in overrides)]
    if "data.verifier" not in " ".join(argv) and "data.task=dataset" in argv:
        argv.append("data.verifier=arith")
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("rlvr: error: "), err
    assert phrase in err, err
    assert list((tmp_path / "runs").iterdir()) == []  # no run directory


def test_eval_with_bad_data_is_one_line_and_status_2(tmp_path, model_dir, capsys):
    """`rlvr eval` reads its held-out rows outside preflight; a bad source is still one line."""
    recipe = base_recipe(tmp_path, model_dir)
    (tmp_path / "train.jsonl").write_text(jsonl(ROWS))
    (tmp_path / "eval.jsonl").write_text(jsonl([*ROWS[:2], {"problem": "1+1="}]))
    argv = ["eval", "--model", str(model_dir), recipe, "data.verifier=arith"]
    argv += [o.replace("{tmp}", str(tmp_path)) for o in DATASET]
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("rlvr: error: "), err
    assert "eval.jsonl:3: no gold answer" in err, err
