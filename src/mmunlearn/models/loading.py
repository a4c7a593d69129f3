"""One loading path for every image-text-to-text model: AutoProcessor + AutoModelForImageTextToText (+ peft).

A hub id (``llava-hf/llava-1.5-7b-hf``) or a local folder (the embedded default, saved by the ``base``
stage) load the same way; nothing here or downstream branches on the model family. Weights load from
safetensors only; ``trust_remote_code`` stays off unless params turn it on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    model: object  # transformers PreTrainedModel, possibly wrapped in a peft PeftModel
    processor: object

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}[name]


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")  # one file, or the index of its shards


def expanded(source: str | Path) -> str:
    """``model.name`` with a leading ``~`` expanded: written so, a folder was taken for a missing one."""
    return str(Path(source).expanduser()) if str(source).startswith("~") else str(source)


def available_locally(source: str | Path, revision: str | None = None) -> bool:
    """Whether ``source`` (params ``model.name``) loads without the network: a folder, or a hub id whose
    files (at ``revision``: a branch, tag or commit; None: main) are in the Hugging Face cache. A hub id
    that is not cached must be downloaded: if the hub is offline (HF_HUB_OFFLINE) or cannot be reached,
    this fails at once, naming the field, where loading would retry each file for minutes."""
    from huggingface_hub import constants, try_to_load_from_cache

    from mmunlearn.errors import ConfigError
    from mmunlearn.network import unreachable

    if Path(expanded(source)).is_dir():
        return True
    name = str(source)
    if name.startswith((".", "/", "~")):
        raise ConfigError(f"model.name: folder {name!r} does not exist")
    cached = {file: isinstance(try_to_load_from_cache(name, file, revision=revision), str)
              for file in WEIGHT_FILES + ("config.json",)}
    if cached["config.json"] and any(cached[file] for file in WEIGHT_FILES):  # else: download what is missing
        return True
    shown = repr(name) if revision is None else f"{name!r} at model.revision {revision!r}"
    fix = (f"download it where there is a network (huggingface-cli download {name}"
           f"{'' if revision is None else f' --revision {revision}'}, cache: {constants.HF_HUB_CACHE}) "
           f"or set model.name to a folder with the weights")
    if _hub_offline():
        raise ConfigError(f"model.name: {shown} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: {fix}")
    endpoint = _hub_endpoint()
    problem = unreachable(endpoint)
    if problem:
        raise ConfigError(f"model.name: {shown} is not in the Hugging Face cache and {endpoint} cannot be "
                          f"reached ({problem}): {fix}")
    _require_on_hub(name, endpoint)
    return False


def _hub_offline() -> bool:
    import os

    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _hub_endpoint() -> str:
    import os

    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_commit(name: str, revision: str | None) -> str:
    """The commit ``name`` at ``revision`` (None: main) is: the cached snapshot's when its files are in the
    Hugging Face cache, else the hub's. Stages load that commit, so a newer snapshot of the same id,
    downloaded mid-study, does not change the model under the study's later stages."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    from mmunlearn.errors import ConfigError, one_line

    if available_locally(name, revision):  # snapshots/<commit>/config.json
        return Path(try_to_load_from_cache(name, "config.json", revision=revision)).parent.name
    try:
        return HfApi(endpoint=_hub_endpoint()).model_info(name, revision=revision).sha
    except Exception as error:  # noqa: BLE001 (no such branch/tag/commit, or the hub's transport failed)
        raise ConfigError(f"model.revision: {revision or 'main'!r} of {name!r} cannot be resolved on "
                          f"{_hub_endpoint()} ({one_line(error)})") from None


def _require_on_hub(name: str, endpoint: str) -> None:
    """Fail now, naming the field, when the hub says the model is not there or not for this user: else the
    first stage that loads it fails, after the stages before it have run."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    from mmunlearn.errors import ConfigError, one_line

    try:
        found = HfApi(endpoint=endpoint).file_exists(name, "config.json")
    except GatedRepoError:
        raise ConfigError(f"model.name: {name!r} is gated on {endpoint}: accept its terms on its page there, then "
                          f"log in (HF_TOKEN or `hf auth login`)") from None
    except HfHubHTTPError as error:  # the hub is having trouble: the download will tell
        log.warning("could not ask %s whether %s exists (%s)", endpoint, name, one_line(error))
        return
    if not found:
        raise ConfigError(f"model.name: {name!r} is not on {endpoint}: check the id (a private model needs "
                          f"HF_TOKEN or `hf auth login`)")


@contextlib.contextmanager
def files_of(source: str | Path) -> Iterator[None]:
    """Name ``source`` (a model or adapter folder, or a hub id) in one line if its files cannot be read: a
    weight file cut short (an interrupted copy), a config that is not JSON, a file missing (transformers
    and peft say so with a ValueError too), or code of its own to run while trust_remote_code is off."""
    from safetensors import SafetensorError

    from mmunlearn.errors import ConfigError, DataError, one_line

    try:
        yield
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, OSError, ValueError) as error:
        if "trust_remote_code" in str(error):
            raise ConfigError(f"{source}: loading it runs code that comes with it, and model.trust_remote_code is "
                              "false: set it to true if you trust that code") from None
        fix = ("if a stage wrote it, rebuild it (dvc repro); else copy it again" if Path(expanded(source)).is_dir()
               else "check model.name")
        raise DataError(f"{source}: its files cannot be loaded ({type(error).__name__}: {one_line(error)}); "
                        f"{fix}") from None


def check_model_folder(folder: str | Path, trust_remote_code: bool = False) -> None:
    """Fail now, in one line, when a folder named by model.name will not load: no config, weights other
    than safetensors, or code of its own to run (else the first stage that loads it fails, later)."""
    from transformers import AutoConfig

    from mmunlearn.errors import ConfigError

    path = Path(expanded(folder))
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.name: {folder} has no config.json: not a saved model folder (save_pretrained writes one)")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        found = sorted(p.name for p in path.glob("*.bin")) or sorted(p.name for p in path.glob("*.pt*"))
        raise ConfigError(f"model.name: {folder} holds no safetensors weights ({', '.join(found) or 'no weights'} "
                          f"there): weights load from safetensors only; convert them (save_pretrained writes "
                          f"safetensors)")
    with files_of(folder):
        AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True)


def load_model(source: str | Path, adapter: str | Path | None = None, *, revision: str | None = None,
               trust_remote_code: bool = False, dtype: str = "float32", trainable_adapter: bool = False) -> LoadedModel:
    """Load a base model (hub id at ``revision``, or folder) and optionally a LoRA adapter on top of it."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    common = {"trust_remote_code": trust_remote_code, "revision": revision,
              "local_files_only": available_locally(source, revision)}
    source = expanded(source)
    with files_of(source):
        processor = AutoProcessor.from_pretrained(str(source), **common)
        model = AutoModelForImageTextToText.from_pretrained(str(source), dtype=_dtype(dtype), use_safetensors=True,
                                                            **common)
    if adapter is not None:
        from peft import PeftModel

        with files_of(adapter):
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable_adapter)
        log.info("loaded adapter %s on %s", adapter, source)
    loaded = LoadedModel(model=model, processor=processor)
    if loaded.tokenizer.pad_token_id is None:  # some checkpoints ship without one; batching needs it
        loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
    loaded.tokenizer.padding_side = "left"
    return loaded


DEVICE_ENV = "MMUNLEARN_DEVICE"


def compute_device():
    """Where this process computes: ``$MMUNLEARN_DEVICE`` if set (``cpu`` or ``cuda``), else its GPU when torch
    sees one, else the CPU. A process's GPU is ``cuda:$LOCAL_RANK`` (0 outside torchrun / deepspeed), as the
    Trainer picks it; choose which GPUs a run sees with ``CUDA_VISIBLE_DEVICES``.

    One rule for training (the Trainer's ``use_cpu``) and inference (evaluation, attacks, reference
    log-probabilities), so a stage never trains on the GPU and then evaluates on the CPU. A host setting,
    not a study parameter: which device computes does not change what ``dvc repro`` must rebuild.
    """
    import os

    import torch

    from mmunlearn.errors import ConfigError

    wanted = os.environ.get(DEVICE_ENV, "").strip().lower() or ("cuda" if torch.cuda.is_available() else "cpu")
    if wanted == "cpu":
        return torch.device("cpu")
    if wanted != "cuda":
        raise ConfigError(f"{DEVICE_ENV}={wanted!r}: expected cpu or cuda (pick GPUs with CUDA_VISIBLE_DEVICES)")
    index = int(os.environ.get("LOCAL_RANK", "0"))
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        raise ConfigError(f"{DEVICE_ENV}=cuda: this process would use GPU {index}, and torch sees {count} here")
    return torch.device("cuda", index)


def place(model):
    """``model`` moved onto the compute device (inference: the Trainer places what it trains)."""
    return model.to(compute_device())


_DERIVES_POSITIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def derives_positions(model) -> bool:
    """Whether the model computes token positions from its inputs itself — multimodal rotary positions
    (Qwen2-VL's M-RoPE: ``get_rope_index``), where a plain count of real tokens would be wrong. Read off
    the modules once per model, whatever wraps it (peft, DeepSpeed)."""
    import torch

    if not isinstance(model, torch.nn.Module):  # e.g. a function standing in for one
        return False
    if model not in _DERIVES_POSITIONS:
        _DERIVES_POSITIONS[model] = any(callable(getattr(module, "get_rope_index", None)) for module in model.modules())
    return _DERIVES_POSITIONS[model]


def lora_config(settings):
    """A peft LoraConfig from params (config.LoraSettings); "gaussian" init as the official code uses."""
    from peft import LoraConfig

    targets = settings.target_modules
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=targets if isinstance(targets, str) else list(targets),
                      modules_to_save=list(settings.modules_to_save) or None, init_lora_weights="gaussian")


def add_lora(model, settings, fields: tuple[str, str] = ("finetune.lora.target_modules",
                                                          "finetune.lora.modules_to_save")):
    """A fresh trainable LoRA adapter (its B matrices start at zero, so the model's outputs are unchanged).
    ``fields``: the params that set ``settings``' target_modules and modules_to_save, named when one of
    them names no module of the model."""
    from peft import get_peft_model

    _require_modules(model, settings, fields)
    return get_peft_model(model, lora_config(settings))


def _layer_names(model) -> list[str]:
    """The last part of every weighted layer's path, linear layers (what LoRA adapts) first."""
    import torch

    layers = [(not isinstance(module, torch.nn.Linear), name.rsplit(".", 1)[-1])
              for name, module in model.named_modules() if name and next(module.parameters(recurse=False), None) is not None]
    return list(dict.fromkeys(name for _, name in sorted(layers)))


def _require_modules(model, settings, fields: tuple[str, str]) -> None:
    """Names peft would match against no module: a target is a traceback from peft, a module to save is
    silently not trained at all. peft's rules: a target matches a module path it equals or ends with after
    a dot (a string other than "all-linear": a regular expression over the whole path); a module to save,
    a path it ends with."""
    import re

    from mmunlearn.errors import ConfigError

    paths = [name for name, _ in model.named_modules() if name]
    targets = settings.target_modules
    if isinstance(targets, str):
        target_found = (lambda name: name == "all-linear" or any(re.fullmatch(name, path) for path in paths))
        targets = [targets]
    else:
        target_found = (lambda name: any(path == name or path.endswith(f".{name}") for path in paths))
    checks = [(fields[0], list(targets), target_found),
              (fields[1], list(settings.modules_to_save), lambda name: any(path.endswith(name) for path in paths))]
    for field, names, found in checks:
        missing = [name for name in names if not found(name)]
        if missing:
            raise ConfigError(f"{field}: {missing} names no module of the model (its layers with weights are "
                              f"named e.g. {_layer_names(model)[:20]})")


def merge_adapter(model):
    """Fold a loaded adapter into the base weights (peft merge_and_unload), leaving a plain model."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save_adapter(model, folder: Path, state_dict: dict | None = None) -> None:
    """Save a peft adapter so equal weights give equal bytes.

    ``state_dict`` carries weights gathered from ZeRO-3 shards when training was sharded. peft writes
    ``target_modules`` from a set, whose order follows the process's hash seed; sorting it keeps the
    adapter folder (a DVC output) byte-identical across runs.
    """
    model.save_pretrained(str(folder), state_dict=state_dict)
    config_path = Path(folder) / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for key, value in config.items():
        if key in ("target_modules", "modules_to_save") and isinstance(value, list):
            config[key] = sorted(value)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
