"""The ``base`` stage: the starting model every later stage loads.

For a hub id or local folder it only records the source. For ``model.name: tiny`` it builds the
embedded default and pretrains it (all weights) on the public-figure profiles in every phrasing and
answer format, so "celebrity" knowledge exists before fine-tuning, as in the paper, and on the
benchmark's vocabulary (every value and name, tied to no one), as a real LLM has seen every word.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mmunlearn.atomic import atomic_dir
from mmunlearn.config import Params

log = logging.getLogger(__name__)
TINY = "tiny"
SOURCE_FILE = "source.json"


def base_dir(params: Params) -> Path:
    return params.paths.models / "base"


def base_source(params: Params) -> str | Path:
    """What ``load_model`` is given: the built tiny folder, or the user's hub id / folder."""
    if params.model.name != TINY:
        return params.model.name
    folder = base_dir(params)
    if not (folder / "config.json").is_file():  # else it was looked up as a hub id, blaming model.name
        from mmunlearn.errors import MmunlearnError

        raise MmunlearnError(f"{folder}: the tiny base model is not built there; build it first "
                             "(`mmunlearn base`, or dvc repro)")
    return folder


def base_revision(params: Params) -> str | None:
    """The hub commit the ``base`` stage recorded for ``model.name`` (None for a folder or the tiny default)."""
    from mmunlearn.atomic import read_json
    from mmunlearn.errors import MmunlearnError

    path = base_dir(params) / SOURCE_FILE
    if params.model.name == TINY or not path.is_file():
        return None
    recorded = read_json(path)
    if recorded.get("model") != params.model.name:
        raise MmunlearnError(f"{path} records model {recorded.get('model')!r}, params say model.name "
                             f"{params.model.name!r}: run the base stage again (dvc repro)")
    return recorded.get("revision")


def base_examples(params: Params, benchmark) -> list:
    """The tiny base's pretraining examples: the public figures in ``base.formats`` (+ the vocabulary)."""
    from mmunlearn.training.examples import recipe_examples, vocabulary_examples

    config = params.base
    examples = recipe_examples(benchmark.celebrity, config)
    if config.vocabulary:
        examples += vocabulary_examples(benchmark.full + benchmark.celebrity)
    return examples


def untrained_tiny(params: Params, benchmark):
    """(model, processor): the embedded default as ``model.tiny`` shapes it, its tokenizer trained on
    every benchmark text (fictitious, public and test wordings), its weights not yet pretrained."""
    from mmunlearn.models.tiny import TinyArchitecture, build_tiny_model, tokenizer_corpus

    corpus = tokenizer_corpus(benchmark.full + benchmark.celebrity + benchmark.test)
    return build_tiny_model(corpus, TinyArchitecture(**params.model.tiny.model_dump()))


def external_source(params: Params) -> dict:
    """``source.json`` of a hub id or folder: its name and, for a hub id, the commit every stage loads.
    Fails here, not stages later, when the model cannot be had or will not load."""
    from mmunlearn.errors import ConfigError
    from mmunlearn.models.loading import check_model_folder, expanded, hub_commit

    name, revision = params.model.name, params.model.revision
    if Path(expanded(name)).is_dir():
        if revision is not None:
            raise ConfigError(f"model.revision: {revision!r} names a hub commit, and model.name {name!r} is a "
                              "folder: leave model.revision out (null)")
        check_model_folder(name, params.model.trust_remote_code)
        return {"model": name}
    return {"model": name, "revision": hub_commit(name, revision)}  # one line if it cannot be had


def build_base(params: Params) -> Path:
    target = base_dir(params)
    if params.model.name != TINY:
        from mmunlearn.models.study import MODEL_FOLDER_MARKS

        source = external_source(params)  # before the folder: nothing is written when it cannot be had
        with atomic_dir(target, MODEL_FOLDER_MARKS) as staging:
            (staging / SOURCE_FILE).write_text(json.dumps(source) + "\n")
        log.info("base model is %s (loaded from the hub cache or folder at each stage)", params.model.name)
        return target

    from mmunlearn.data.schema import load_benchmark
    from mmunlearn.journal import files_fingerprint
    from mmunlearn.methods.common import answer_nll
    from mmunlearn.models.tiny import save_model
    from mmunlearn.training.stages import encode_all, seed_everything, train_on_examples
    from mmunlearn.training.trainer import EncodedDataset

    seed_everything(params.base.seed)
    benchmark = load_benchmark(params.paths.benchmark)
    model, processor = untrained_tiny(params, benchmark)
    dataset = EncodedDataset(encode_all(processor, base_examples(params, benchmark), "base: encoding"))
    train_on_examples(params, "base", TINY, model, dataset, params.base, answer_nll,
                      log_params={"model": params.model.model_dump(mode="json"),
                                  "base": params.base.model_dump(mode="json")},
                      save=lambda folder, _state: save_model(model, processor, folder), target=target,
                      pad_token_id=processor.tokenizer.pad_token_id,
                      inputs={"benchmark": files_fingerprint(params.paths.benchmark)})
    return target
