"""The study's models by name: base, the vanilla / retain adapters, and unlearned models.

An unlearned model's folder holds ``stack.json``: the model it was unlearned from (``on_top_of``),
whether it trained an adapter of its own, and the system prompt it is asked under (Prompting). Its
adapter is a delta on top of the vanilla weights, so "the model before unlearning" is the same
weights with that adapter switched off.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmunlearn.atomic import read_json
from mmunlearn.config import Params
from mmunlearn.errors import DataError, MmunlearnError
from mmunlearn.models.base import SOURCE_FILE, base_revision, base_source

STACK_FILE = "stack.json"
# One of these in a folder shows it is a model folder a stage wrote (full model, adapter, stack, hub pointer).
MODEL_FOLDER_MARKS = ("config.json", "adapter_config.json", STACK_FILE, SOURCE_FILE)
ADAPTER_CONFIG = "adapter_config.json"  # what peft's save_pretrained writes into an adapter folder


def load_study_model(params: Params, name: str | None = None):
    """A model of the study by name, loaded as params.yaml ``model:`` says.

    ``None``: the base model. ``vanilla`` / ``retain``: the base with that LoRA adapter. An unlearned
    model (``models/<name>/stack.json``): the model it was unlearned from with its adapter merged in,
    plus the unlearning adapter, if it trained one.
    """
    from mmunlearn.models.loading import LoadedModel, files_of, load_model, merge_adapter

    common = {"trust_remote_code": params.model.trust_remote_code, "dtype": params.model.dtype,
              "revision": base_revision(params)}
    if name is None:
        return load_model(base_source(params), **common)
    folder = params.paths.models / name
    stack = read_stack(folder)
    if stack is None:
        _require_adapter(folder, f"no trained model there (neither {ADAPTER_CONFIG} nor {STACK_FILE})")
        return load_model(base_source(params), folder, **common)
    if stack["adapter"]:  # checked before the models under it load
        _require_adapter(folder, f"{STACK_FILE} names an adapter of its own but {ADAPTER_CONFIG} is missing")
    under = load_study_model(params, stack["on_top_of"])
    model = merge_adapter(under.model)
    if stack["adapter"]:
        from peft import PeftModel

        with files_of(folder):
            model = PeftModel.from_pretrained(model, str(folder))
    return LoadedModel(model=model, processor=under.processor)


def _require_adapter(folder: Path, problem: str) -> None:
    """Fail with one line unless ``folder`` holds an adapter: peft would look the folder up on the
    Hugging Face hub, retrying for ~25 s before a traceback."""
    if not (folder / ADAPTER_CONFIG).is_file():
        raise MmunlearnError(f"{folder}: {problem}; build it first (dvc repro)")


def model_fingerprint(params: Params, name: str | None) -> dict:
    """What a study model's outputs depend on: the files of its folder and of every model under it, down
    to the base (a hub id by name and recorded commit, with the loading settings)."""
    from mmunlearn.journal import files_fingerprint

    if name is None:
        source = base_source(params)
        return {"base": str(source), "files": files_fingerprint(source) if Path(source).is_dir() else None,
                "revision": base_revision(params), "model": params.model.model_dump(mode="json")}
    folder = params.paths.models / name
    stack = read_stack(folder)
    return {"name": name, "files": files_fingerprint(folder),
            "under": model_fingerprint(params, stack["on_top_of"] if stack else None)}


def read_stack(folder: Path) -> dict | None:
    """What an unlearned model is made of (``on_top_of``, ``adapter``, ``system_prompt``), or None for an adapter."""
    path = Path(folder) / STACK_FILE
    if not path.is_file():
        return None
    stack = read_json(path)
    on_top_of = stack.get("on_top_of")
    # a stack without these, or standing on itself, was a KeyError or a RecursionError when loaded
    if not isinstance(on_top_of, str) or not isinstance(stack.get("adapter"), bool) or on_top_of == Path(folder).name:
        raise DataError(f"{path}: expected on_top_of (another model's name) and adapter (true/false), found "
                        f"{stack!r:.120}; rebuild it (dvc repro)")
    return stack


def write_stack(folder: Path, on_top_of: str, adapter: bool, system_prompt: str | None, **details) -> None:
    payload = {"on_top_of": on_top_of, "adapter": adapter, "system_prompt": system_prompt, **details}
    (Path(folder) / STACK_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
