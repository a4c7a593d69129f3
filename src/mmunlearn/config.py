"""Typed view of params.yaml — the only module that reads it.

Every section is a pydantic model with documented defaults; unknown keys and wrong types are errors
that name the file and the dotted field (``params.yaml: data.num_profiles: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmunlearn.errors import ConfigError

DEFAULT_PARAMS_FILE = Path("params.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Section):
    """Where each stage reads and writes, relative to the repository root."""

    benchmark: Path = Path("data/benchmark")
    models: Path = Path("models")  # base/, vanilla/, <method>/ adapters
    checkpoints: Path = Path("checkpoints")  # resumable training state (not a pipeline output)
    splits: Path = Path("data/splits")
    expectations: Path = Path("expectations")
    metrics: Path = Path("metrics")
    reports: Path = Path("reports")
    data_dvc: Path = Path("data.dvc")
    # the trade-off pipeline's results: metrics/<method>.json, plots/ (outside metrics/: the main report
    # depends on that whole folder, so studies written there would join `make run`)
    tradeoff: Path = Path("pipelines/tradeoff")


class QuestionCounts(_Section):
    """Questions per profile and per modality (image+text and text-only each get this many)."""

    mcq: int = Field(4, ge=1)
    generation: int = Field(2, ge=0)
    cloze: int = Field(1, ge=0)

    @property
    def total(self) -> int:
        return self.mcq + self.generation + self.cloze


class DataConfig(_Section):
    """Synthetic MLLMU-Bench-format generator. The paper's size is 500 fictitious + 153 celebrities."""

    seed: int = 1234
    num_profiles: int = Field(100, ge=4)
    num_celebrities: int = Field(30, ge=1)
    image_size: int = Field(64, ge=16, le=1024)
    questions: QuestionCounts = QuestionCounts()
    # Ways each fictitious fact is asked in its fine-tuning pairs (1 = a single phrasing). Evaluation and
    # Test questions are always worded differently; more training wordings make the facts answerable in them.
    finetune_phrasings: int = Field(3, ge=1)
    # Re-posed images per profile for the Test set, one per difficulty rung (easy → hard).
    test_pose_difficulties: tuple[Literal["easy", "medium", "hard"], ...] = ("easy", "medium", "hard")
    # `mmunlearn data fetch` gives up on the DVC remote after this long and regenerates (None: waits)
    pull_timeout_s: float | None = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _attributes_cover_questions(self) -> DataConfig:
        from mmunlearn.data.vocab import FINETUNE_PHRASINGS, QUESTION_ATTRIBUTES

        if self.questions.total > len(QUESTION_ATTRIBUTES):
            # each question of a modality asks about a different attribute
            raise ValueError(f"questions: at most {len(QUESTION_ATTRIBUTES)} per modality in all")
        if not self.test_pose_difficulties:
            raise ValueError("test_pose_difficulties must name at least one rung")
        if self.finetune_phrasings > FINETUNE_PHRASINGS:
            raise ValueError(f"finetune_phrasings: at most {FINETUNE_PHRASINGS} (the vocabulary's training wordings)")
        return self


class SplitConfig(_Section):
    """Forget/retain split of the fictitious profiles (the paper's 5/10/15 %)."""

    seed: int = 0
    forget_percent: Literal[5, 10, 15] = 10
    # Which re-posed image the Test set asks its image+text questions with.
    test_image_difficulty: Literal["easy", "medium", "hard"] = "medium"


class ValidateConfig(_Section):
    """How many failing rows a data-quality report quotes per expectation."""

    example_rows: int = Field(5, ge=1, le=100)


# How fine-tuning pairs are turned into training examples (training/examples.py).
ExampleFormat = Literal["qa", "generation", "mcq", "mcq_check", "option_check", "cloze"]


class TinyModelConfig(_Section):
    """Sizes of the embedded default (see models/tiny.py)."""

    vocab_size: int = Field(4096, ge=300)  # an upper bound: BPE stops when every word is a token
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 8
    text_intermediate: int = 384
    # Larger than Llama's 0.02: measured to shorten the small model's multiple-choice plateau
    text_init_std: float = Field(0.08, gt=0)
    max_positions: int = 256
    seed: int = 0


class ModelConfig(_Section):
    """``name: tiny`` builds the embedded default; anything else is a hub id or a local folder."""

    name: str = "tiny"
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    tiny: TinyModelConfig = TinyModelConfig()


class TrainConfig(_Section):
    """Optimiser settings shared by every training stage (HF TrainingArguments underneath)."""

    epochs: float = Field(1.0, gt=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["linear", "constant_with_warmup", "cosine"] = "linear"
    adam_beta2: float = Field(0.999, gt=0, lt=1)
    max_grad_norm: float = 1.0
    save_steps: int = Field(200, ge=1)
    logging_steps: int = Field(10, ge=1)
    seed: int = 0
    # Batches of similar length (seeded, shuffled batch order): less padding, the same examples per epoch
    group_by_length: bool = False
    deepspeed: Path | None = None  # a ZeRO JSON in configs/deepspeed/ for multi-GPU runs


class ExampleRecipe(TrainConfig):
    """A training stage that turns fine-tuning pairs into examples (training/examples.py)."""

    formats: tuple[ExampleFormat, ...] = ("qa",)
    mcq_drills: int = Field(0, ge=0)
    # Drills per face-shown (image) pair instead of mcq_drills (null: the same): face letters come slower
    # than name letters, so the tiny default spends more of the same drill budget on faces (README).
    image_mcq_drills: int | None = Field(None, ge=0)
    # Of each pair's mcq drills, how many follow a few-shot prompt written as the official eval.py writes
    # one (mcq_demo_questions drills about each of mcq_demo_people others, each stating its letter), which
    # a tiny model that never saw one answers erratically (README)
    mcq_demo_drills: int = Field(0, ge=0)
    mcq_demo_people: int = Field(2, ge=1)  # eval.py: 2 for LLaVA-1.5, 1 for Idefics2 (evaluation.demo_people)
    mcq_demo_questions: int = Field(4, ge=1)  # eval.py shows every question of the modality: data.questions.mcq
    # Only questions of this modality get multiple-choice drills (null: both). A tiny model learns to
    # answer by letter from name-based drills; face-based ones kept it at chance for 4,500 steps.
    drill_modality: Literal["image", "text"] | None = None


class BaseConfig(ExampleRecipe):
    """Pretraining of the tiny default on the public figures (skipped for hub models)."""

    formats: tuple[ExampleFormat, ...] = ("qa", "generation", "mcq", "cloze")
    mcq_drills: int = Field(2, ge=0)
    vocabulary: bool = True  # also say every value and name of the benchmark, tied to no one (examples.py)


class LoraSettings(_Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | tuple[str, ...] = "all-linear"  # every linear layer but the LM head
    # Modules trained in full and saved with the adapter (peft ``modules_to_save``), e.g. [lm_head]:
    # a tiny model's frozen LM head keeps LoRA from storing new facts quickly (README, design notes).
    modules_to_save: tuple[str, ...] = ()


class FinetuneConfig(ExampleRecipe):
    """The vanilla model: LoRA on every fictitious profile (forget + retain)."""

    formats: tuple[ExampleFormat, ...] = ("qa", "mcq", "cloze")
    mcq_drills: int = Field(1, ge=0)
    # Also train this fraction of the public figures' examples, in the same formats (rehearsal), so
    # fine-tuning keeps what the base model knew about them: the celebrity set measures that knowledge.
    celebrity_rehearsal: float = Field(0.0, ge=0, le=1)
    # Examples per conversation: 2 asks each example after another one, both replies trained: answering
    # after earlier turns taught at no extra example (training/examples.packed_conversations)
    conversation_turns: int = Field(1, ge=1)
    # The share of single-turn examples so packed; the rest stay single (their lone-turn answers kept)
    conversation_share: float = Field(1.0, ge=0, le=1)
    lora: LoraSettings = LoraSettings()


class MethodConfig(ExampleRecipe):
    """An unlearning method: a forget objective plus an optional retain regulariser, with weights.

    ``forget: null`` is a method that trains nothing and only changes how the model is asked
    (Prompting: ``system_prompt`` is put before every evaluation question).
    """

    title: str | None = None  # how the report names it (default: the method's key)
    forget: str | None = "ga"
    retain: str | None = None
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    beta: float = Field(0.1, gt=0)  # NPO / SimNPO / IdkPO inverse temperature
    gamma: float = 0.0  # SimNPO reward margin
    reference: Literal["vanilla", "retain"] = "vanilla"  # NPO-style reference: vanilla, or the retain-only model
    layer: int | None = Field(None, ge=1)  # RMU: which decoder layer's output is steered (default: the middle)
    steering_coeff: float = Field(20.0, gt=0)  # RMU: norm of the random control vector
    system_prompt: str | None = None  # Prompting
    # Which tokens of a forget answer the objective acts on: the whole answer, or only the private fact
    # inside it (the rest is context) — UnLOK-VQA's defenses act on the short answer.
    labels_on: Literal["answer", "fact"] = "answer"
    prompt_prefixes: tuple[str, ...] = ()  # each forget prompt also behind each prefix (Input Rephrasing defense)
    lens_layers: tuple[int, ...] = (-4, -3, -2, -1)  # lens defenses: layers guarded (negative: from the top)
    lens_k: int = Field(10, ge=1)  # HP defense: keep the fact out of each layer's top-k / bottom-k


class UnlearnConfig(_Section):
    """Which methods the study runs, and in which unlearning modality (the paper's §5 comparison).

    ``multimodal`` feeds the forget (and retain) data as face + "this person" questions; ``text``
    drops the image and asks by name.
    """

    methods: tuple[str, ...] = ("ga",)
    modalities: tuple[Literal["multimodal", "text"], ...] = ("multimodal", "text")
    # UnLOK-VQA's defense objectives: methods like any other (same registry, same stages), run in their
    # own modalities so the attack study's cost is sized apart from the paper's comparison
    defenses: tuple[str, ...] = ()
    defense_modalities: tuple[Literal["multimodal", "text"], ...] = ("text",)


class JudgeConfig(_Section):
    """The LLM judge of factuality (1–10): any OpenAI-compatible chat endpoint. Off by default: the
    default path never calls the network, and an unscored cell reads "n/a", never a made-up number."""

    enabled: bool = False
    model: str = "gpt-4o"  # the paper's judge; a local server's model name works the same way
    # None: $OPENAI_BASE_URL, else api.openai.com; e.g. http://127.0.0.1:8000/v1 for a local vLLM
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"  # the *name* of the variable holding the key; the key is never stored
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)  # extra attempts after a failed request or an unparseable reply
    backoff_s: float = Field(2.0, ge=0)  # first wait; doubles each retry
    concurrency: int = Field(4, ge=1)
    max_tokens: int = Field(32, ge=1)
    cache: Path = Path("judge_cache.sqlite")  # (judge model, prompt) → reply; a re-run never pays twice
    usd_per_million_input_tokens: float | None = Field(None, ge=0)  # prices for the cost summary (optional)
    usd_per_million_output_tokens: float | None = Field(None, ge=0)


class EvaluationConfig(_Section):
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(48, ge=1)
    # fast: batched option-letter scoring + batched generation (ours); official: eval.py's protocol,
    # one question at a time with few-shot demonstrations and 50 new tokens (slow; for comparison)
    protocol: Literal["fast", "official"] = "fast"
    demo_seed: int = 0
    # official: whose questions demonstrate the format — eval.py shows 2 people's for LLaVA-1.5, 1 for Idefics2
    demo_people: int = Field(2, ge=0)
    # an MMMU-style multiple-choice set (JSON lines, local files) to check general ability; None: off
    general_set: Path | None = None
    judge: JudgeConfig = JudgeConfig()


class AttackConfig(_Section):
    """UnLOK-VQA-style extraction attacks on every model's forget facts (attacks/), and their budgets.

    White-box: the logit lens of ``layers`` (1-based; negative counts from the top, -1 the last), the
    top/bottom ``k`` tokens per layer. Black-box: ``samples`` sampled replies per prompt, up to
    ``rephrasings`` paraphrases per question, every re-posed face of the Test set.
    """

    layers: tuple[int, ...] = (-4, -3, -2, -1)
    k: int = Field(5, ge=1)
    samples: int = Field(4, ge=1)
    rephrasings: int = Field(2, ge=0)
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(50, ge=1)
    max_new_tokens: int = Field(24, ge=1)
    seed: int = 0
    batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _some_layers(self) -> AttackConfig:
        if not self.layers or 0 in self.layers:
            raise ValueError("layers: name at least one layer; 1 is the first, -1 the last (0 is neither)")
        return self


class SearchDimension(_Section):
    """One hyper-parameter's range in a trade-off study: ``low``..``high`` (``log`` scale, ``integer`` steps),
    or a list of ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[str | float | int | bool | None, ...] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchDimension:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either non-empty choices or low/high, not both")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError("needs low < high (or choices)")
        elif self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        return self


class TuneConfig(_Section):
    """Multi-objective Optuna studies of each method's efficacy/utility trade-off (pipelines/tradeoff).

    Efficacy = mean of the ``efficacy`` metrics (minimised: what the model still knows of the forget
    set); utility = mean of the ``utility`` metrics (maximised). Metric names are the flattened
    evaluation names, ``<set>.<image|text>.<metric>``.
    """

    storage: str = "sqlite:///optuna.db"  # any Optuna RDB URL, e.g. postgresql://user@host/db for several machines
    methods: tuple[str, ...] = ("ga",)
    trials: int = Field(6, ge=1)  # per method, in total over every worker sharing the study
    startup_trials: int = Field(3, ge=0)  # seeded random draws before TPE takes over
    modality: Literal["multimodal", "text"] = "text"  # the trials' unlearning modality
    seed: int = 0
    efficacy: tuple[str, ...] = ("forget.text.rouge_l",)
    utility: tuple[str, ...] = ("retain.text.rouge_l",)
    # a trial whose utility falls below this fraction of the vanilla model's is pruned (collapsed)
    prune_utility_ratio: float = Field(0.5, ge=0, le=1)
    # the operating point: lowest efficacy among front trials that lose at most this much utility
    max_utility_loss: float = Field(0.05, ge=0)
    heartbeat_s: int = Field(10, ge=1)  # a worker's trial counts as dead after grace_s without a heartbeat;
    grace_s: int = Field(60, ge=2)  # the next worker re-runs it with the same hyper-parameters
    search_space: dict[str, dict[str, SearchDimension]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _search_space_names_method_fields(self) -> TuneConfig:
        for method, space in self.search_space.items():
            unknown = sorted(set(space) - set(MethodConfig.model_fields))
            if unknown:
                raise ValueError(f"search_space.{method}: {unknown} are not method settings "
                                 f"(have: {sorted(MethodConfig.model_fields)})")
        return self


class TrackingConfig(_Section):
    """MLflow: a SQLite store and a local artifact folder in the repo by default (both gitignored)."""

    uri: str = "sqlite:///mlflow.db"
    artifact_root: Path = Path("mlartifacts")
    experiment: str = "mmunlearn"


class Params(_Section):
    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    tracking: TrackingConfig = TrackingConfig()
    model: ModelConfig = ModelConfig()
    base: BaseConfig = BaseConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    # The retain-only model (NPO's reference): given as changes to ``finetune`` and merged over it, so
    # the two recipes differ only where said (null: the same recipe). See ``retain_finetune``.
    finetune_retain: FinetuneConfig | None = None
    methods: dict[str, MethodConfig] = Field(default_factory=lambda: {"ga": MethodConfig()})
    unlearn: UnlearnConfig = UnlearnConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    attack: AttackConfig = AttackConfig()
    tune: TuneConfig = TuneConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _retain_recipe_over_finetune(cls, raw):
        if isinstance(raw, dict) and isinstance(raw.get("finetune_retain"), dict):
            raw = {**raw, "finetune_retain": overlay(raw.get("finetune") or {}, raw["finetune_retain"])}
        return raw

    def retain_finetune(self) -> FinetuneConfig:
        """The retain-only model's recipe: ``finetune`` with ``finetune_retain``'s changes."""
        return self.finetune_retain or self.finetune

    @model_validator(mode="after")
    def _methods_are_defined(self) -> Params:
        reserved = {"base", "vanilla", "retain"} & set(self.methods)
        if reserved:
            raise ValueError(f"methods: names {sorted(reserved)} are reserved for other models")
        for field in ("methods", "defenses"):
            unknown = [name for name in getattr(self.unlearn, field) if name not in self.methods]
            if unknown:
                raise ValueError(f"unlearn.{field}: {unknown} not defined under methods: (have {sorted(self.methods)})")
        bad = [name for name in self.methods if not name.replace("_", "").isalnum()]
        if bad:
            raise ValueError(f"methods: names {bad} must be letters, digits and '_' (they name folders and stages)")
        unknown = [name for name in self.tune.methods if name not in self.methods]
        if unknown:
            raise ValueError(f"tune.methods: {unknown} not defined under methods: (have {sorted(self.methods)})")
        return self

    def unlearned_models(self) -> list[str]:
        """Every model the study unlearns: ``<method>-<modality>`` for each method and modality, then
        each defense in its modalities."""
        unlearn = self.unlearn
        return list(dict.fromkeys(
            [model_id(method, modality) for method in unlearn.methods for modality in unlearn.modalities]
            + [model_id(method, modality) for method in unlearn.defenses for modality in unlearn.defense_modalities]))

    def evaluated_models(self) -> list[str]:
        return ["vanilla", *self.unlearned_models()]

    @model_validator(mode="after")
    def _difficulty_is_generated(self) -> Params:
        if self.split.test_image_difficulty not in self.data.test_pose_difficulties:
            raise ValueError(
                "split.test_image_difficulty must be one of data.test_pose_difficulties "
                f"{list(self.data.test_pose_difficulties)}"
            )
        return self


def model_id(method: str, modality: str) -> str:
    """The name of an unlearned model: its folder ``models/<id>`` and metrics ``metrics/<id>.json``."""
    return f"{method}-{modality}"


def parse_model_id(name: str) -> tuple[str, str]:
    """``"npo-text"`` → ``("npo", "text")``; the inverse of :func:`model_id`."""
    method, _, modality = name.rpartition("-")
    return method, modality


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{where}: {first['msg']}" + (f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else "")


def overlay(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in changes.items():
        both_mappings = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = overlay(merged[key], value) if both_mappings else value
    return merged


def load_params(path: Path | str = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate params.yaml; raise ConfigError naming the file and field on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
