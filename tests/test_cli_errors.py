"""Bad input: one clear line naming the file/field, a non-zero exit, and nothing half-written."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mmunlearn.data import fetch
from mmunlearn.models.study import write_stack
from tests.conftest import run_cli


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name or ".old-" in p.name)


def _assert_one_clean_line(code, err, *needles):
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_missing_params_file(project, capsys):
    code, _, err = run_cli(["--params", "nope.yaml", "data", "synth"], capsys)
    _assert_one_clean_line(code, err, "nope.yaml", "not found")
    assert not (project / "data").exists()


@pytest.mark.parametrize(("text", "needles"), [
    ("data: [unclosed", ("params.yaml", "not valid YAML", "line")),
    ("data:\n  num_profiles: many\n", ("params.yaml", "data.num_profiles")),
    ("data:\n  num_profiles: 2\n", ("params.yaml", "data.num_profiles", "greater than or equal to 4")),
    ("split:\n  forget_percent: 12\n", ("params.yaml", "split.forget_percent")),
    ("data:\n  colour: blue\n", ("params.yaml", "data.colour", "Extra inputs")),
    ("- just\n- a list\n", ("params.yaml", "mapping")),
    ("split:\n  test_image_difficulty: hard\ndata:\n  test_pose_difficulties: [easy]\n",
     ("params.yaml", "test_image_difficulty")),
    ("unlearn:\n  methods: [ga, npo]\n", ("params.yaml", "unlearn.methods", "npo", "not defined")),
    ("methods:\n  vanilla: {forget: ga}\n", ("params.yaml", "reserved")),
    ("methods:\n  ga: {forget: ga, reference: oracle}\n", ("params.yaml", "methods.ga.reference")),
    ("unlearn:\n  modalities: [audio]\n", ("params.yaml", "unlearn.modalities")),
    ("finetune_retain:\n  mcq_drills: -1\n", ("params.yaml", "finetune_retain.mcq_drills")),
    ("finetune:\n  image_mcq_drills: -2\n", ("params.yaml", "finetune.image_mcq_drills")),
    ("finetune:\n  mcq_demo_drills: one\n", ("params.yaml", "finetune.mcq_demo_drills")),
    # each of these was accepted or a traceback before
    ("split:\n  seed: 1\nsplit:\n  seed: 2\n", ("params.yaml", "line 3", "'split' is given twice")),
    ("methods:\n  ga: {forget: ga, lr: .inf}\n", ("params.yaml", "methods.ga.lr", "finite")),
    ("finetune: [1, 2]\nfinetune_retain:\n  epochs: 1\n", ("params.yaml", "finetune", "dictionary")),
    # ... and these a traceback at the stage that met them (training, the tiny build, the judge)
    ("finetune:\n  formats: []\n", ("params.yaml", "finetune.formats", "at least 1")),
    ("finetune:\n  max_grad_norm: -1\n", ("params.yaml", "finetune.max_grad_norm", "greater than 0")),
    ("model:\n  tiny: {patch_size: 0}\n", ("params.yaml", "model.tiny.patch_size")),
    ("model:\n  tiny: {patch_size: 5}\n", ("params.yaml", "model.tiny", "patch_size 5 must divide image_size 32")),
    ("model:\n  tiny: {text_heads: 7}\n", ("params.yaml", "model.tiny", "text_heads 7 must divide text_hidden 128")),
    ("model:\n  tiny: {text_heads: 128}\n", ("params.yaml", "model.tiny", "must be even")),
    ("evaluation:\n  judge: {api_key_env: ''}\n", ("params.yaml", "evaluation.judge.api_key_env")),
    ("tune:\n  search_space:\n    npoo: {lr: {low: 0.001, high: 0.01}}\n",
     ("params.yaml", "tune.search_space.npoo", "no method 'npoo'")),
])
def test_malformed_params_name_the_field(project, capsys, text, needles):
    (project / "params.yaml").write_text(text)
    code, _, err = run_cli(["data", "synth"], capsys)
    _assert_one_clean_line(code, err, *needles)
    assert not (project / "data").exists()


def test_a_params_file_that_is_not_utf8_is_named(project, capsys):
    (project / "params.yaml").write_bytes(b"\xff\xfesplit: {}\n")
    code, _, err = run_cli(["data", "synth"], capsys)
    _assert_one_clean_line(code, err, "params.yaml", "not UTF-8")


@pytest.mark.parametrize("method", ["{forget: bogus}", "{forget: ga, retain: bogus}"])
def test_a_misspelt_objective_fails_before_any_training(project, capsys, method):
    """It passed every check until the first unlearning stage, after base and vanilla had trained."""
    (project / "other.yaml").write_text(f"methods:\n  ga: {method}\n")
    code, _, err = run_cli(["--params", "other.yaml", "base"], capsys)
    _assert_one_clean_line(code, err, "other.yaml: methods.ga", "bogus")
    assert not (project / "models").exists()


def test_validate_without_data_says_how_to_get_it(project, capsys):
    code, _, err = run_cli(["validate"], capsys)
    _assert_one_clean_line(code, err, "data/benchmark", "mmunlearn data fetch")
    assert not (project / "metrics").exists()


def test_split_with_a_broken_table_names_the_file(project, capsys):
    assert run_cli(["data", "synth"], capsys)[0] == 0
    (project / "data" / "benchmark" / "full.parquet").write_bytes(b"garbage")
    code, _, err = run_cli(["split"], capsys)
    _assert_one_clean_line(code, err, "full.parquet", "parquet")
    assert not (project / "data" / "splits").exists()


def _rewrite_metadata(path, text):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    column = table.column_names.index("metadata")
    pq.write_table(table.set_column(column, "metadata", pa.array([text] * table.num_rows)), path)


@pytest.mark.parametrize(("damage", "command", "needles"), [
    (lambda data: (data / "benchmark" / "manifest.json").write_bytes(b"\xff\xfe{}"), "split",
     ("manifest.json", "cannot be read")),
    (lambda data: (data / "benchmark" / "manifest.json").write_text("[1, 2]"), "validate",
     ("manifest.json", "expected a JSON object")),
    (lambda data: _rewrite_metadata(data / "benchmark" / "full.parquet", '["x"]'), "split",
     ("full.parquet row 0", "not laid out as MLLMU-Bench")),
])
def test_data_of_another_shape_is_named_not_a_traceback(project, capsys, damage, command, needles):
    """Each was an AttributeError or UnicodeDecodeError traceback."""
    assert run_cli(["data", "synth"], capsys)[0] == 0
    damage(project / "data")
    code, _, err = run_cli([command], capsys)
    _assert_one_clean_line(code, err, *needles)
    assert not (project / "data" / "splits").exists()


def test_an_expectation_suite_that_is_no_object_is_named(project, capsys):
    assert run_cli(["data", "synth"], capsys)[0] == 0
    (project / "expectations" / "items.json").write_text("[1]")
    code, _, err = run_cli(["validate"], capsys)
    _assert_one_clean_line(code, err, "items.json", "'expectations' must be a list")


def test_interrupted_synth_leaves_the_previous_output_whole(project, capsys, monkeypatch):
    assert run_cli(["data", "synth"], capsys)[0] == 0
    folder = project / "data" / "benchmark"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch, "save_benchmark", crash)
    assert run_cli(["data", "synth"], capsys)[0] != 0  # click reports the interrupt as Abort
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert _leftovers(project) == []


@pytest.mark.parametrize(("args", "needles"), [
    (["unlearn", "--method", "nope"], ("methods.nope", "no such method")),
    (["unlearn", "--method", "ga", "--modality", "audio"], ("--modality", "audio")),
    (["finetune", "--subset", "forget"], ("--subset", "forget")),
    (["evaluate", "--model", "ga"], ("--model", "ga-multimodal")),
])
def test_bad_stage_arguments_name_the_flag(project, capsys, args, needles):
    code, _, err = run_cli(args, capsys)
    _assert_one_clean_line(code, err, *needles)
    assert not (project / "models").exists()


def test_unknown_objective_is_named(project, capsys):
    (project / "params.yaml").write_text("methods:\n  ga: {forget: gradient_descent}\n")
    code, _, err = run_cli(["unlearn", "--method", "ga"], capsys)
    _assert_one_clean_line(code, err, "methods.ga", "unknown forget objective", "gradient_descent")


@pytest.mark.parametrize(("offline", "needles"), [
    ("1", ("model.name", "some-org/no-such-model", "not in the Hugging Face cache", "HF_HUB_OFFLINE")),
    ("", ("model.name", "some-org/no-such-model", "cannot be reached", "127.0.0.1:9")),
])
def test_a_hub_model_that_cannot_be_had_fails_at_the_base_stage(project, capsys, monkeypatch, offline, needles):
    """Offline with nothing cached, loading would retry every file for minutes before a hub error."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", bool(offline))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens, refused at once
    (project / "params.yaml").write_text("model:\n  name: some-org/no-such-model\n")
    code, _, err = run_cli(["base"], capsys)
    _assert_one_clean_line(code, err, *needles)
    assert not (project / "models").exists()


class _HubAnswers(BaseHTTPRequestHandler):
    """Answers a file lookup as huggingface.co does for a repo that is not there, and for a gated one."""

    def do_HEAD(self):  # noqa: N802 (http.server's naming)
        gated = self.path.startswith("/some-org/gated-model/")
        self.send_response(403 if gated else 401)
        self.send_header("X-Error-Code", "GatedRepo" if gated else "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubAnswers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("name", "needles"), [
    ("some-org/no-such-model", ("model.name", "'some-org/no-such-model' is not on", "check the id", "HF_TOKEN")),
    ("some-org/gated-model", ("model.name", "'some-org/gated-model' is gated", "accept its terms", "HF_TOKEN")),
])
def test_a_hub_model_the_hub_does_not_give_fails_at_the_base_stage(project, capsys, monkeypatch, hub, name, needles):
    """A typo in model.name, or a gated model without access, used to pass the base stage and fail the next."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub)
    (project / "params.yaml").write_text(f"model:\n  name: {name}\n")
    code, _, err = run_cli(["base"], capsys)
    _assert_one_clean_line(code, err, *needles)
    assert not (project / "models").exists()


def test_a_missing_model_folder_is_named(project, capsys):
    (project / "params.yaml").write_text("model:\n  name: ./weights/llava\n")
    code, _, err = run_cli(["base"], capsys)
    _assert_one_clean_line(code, err, "model.name", "./weights/llava", "does not exist")


def test_a_model_folder_with_only_bin_weights_is_refused_by_base(project, capsys):
    """It passed `base`; `finetune` then refused it, advising a rebuild that cannot help a user's folder."""
    weights = project / "weights" / "llava"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text('{"model_type": "llava"}')
    (weights / "pytorch_model.bin").write_bytes(b"pickled weights")
    (project / "params.yaml").write_text("model:\n  name: ./weights/llava\n")
    code, _, err = run_cli(["base"], capsys)
    _assert_one_clean_line(code, err, "model.name", "./weights/llava", "safetensors only")
    assert not (project / "models").exists()


def test_evaluating_a_model_not_built_yet_names_its_folder_at_once(project, capsys, monkeypatch):
    """peft would look a missing adapter folder up on the hub, retrying for ~25 s, then raise a traceback."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # were anything to ask the hub, it would fail here
    assert run_cli(["data", "synth"], capsys)[0] == 0 and run_cli(["split"], capsys)[0] == 0
    code, _, err = run_cli(["evaluate", "--model", "vanilla"], capsys)
    _assert_one_clean_line(code, err, "models/vanilla", "no trained model there", "adapter_config.json")
    assert not (project / "metrics" / "vanilla.json").exists()


@pytest.mark.parametrize("command", [["finetune"], ["finetune", "--subset", "retain"]])
def test_a_stage_run_before_the_tiny_base_is_built_says_so(project, capsys, monkeypatch, command):
    """It blamed model.name ('models/base' not in the Hugging Face cache) after asking the hub."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert run_cli(["data", "synth"], capsys)[0] == 0 and run_cli(["split"], capsys)[0] == 0
    code, _, err = run_cli(command, capsys)
    _assert_one_clean_line(code, err, "models/base", "the tiny base model is not built there", "mmunlearn base")
    assert "model.name" not in err and "Hugging Face" not in err


def test_an_unlearned_model_without_its_adapter_names_its_folder_at_once(project, capsys, monkeypatch):
    """Its stack.json promises an adapter that is not there (an interrupted copy): one line, before the
    models under it load and before peft asks the hub for the folder."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert run_cli(["data", "synth"], capsys)[0] == 0 and run_cli(["split"], capsys)[0] == 0
    folder = project / "models" / "ga-text"
    folder.mkdir(parents=True)
    write_stack(folder, on_top_of="vanilla", adapter=True, system_prompt=None)
    code, _, err = run_cli(["evaluate", "--model", "ga-text"], capsys)
    _assert_one_clean_line(code, err, "models/ga-text", "stack.json", "adapter_config.json is missing")
    assert not (project / "metrics" / "ga-text.json").exists()


def test_a_stack_that_names_no_model_is_named(project, capsys, monkeypatch):
    """{} was a KeyError; a stack on top of itself a RecursionError."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert run_cli(["data", "synth"], capsys)[0] == 0 and run_cli(["split"], capsys)[0] == 0
    folder = project / "models" / "ga-text"
    folder.mkdir(parents=True)
    for stack in ("{}", '{"on_top_of": "ga-text", "adapter": false}'):
        (folder / "stack.json").write_text(stack)
        code, _, err = run_cli(["evaluate", "--model", "ga-text"], capsys)
        _assert_one_clean_line(code, err, "models/ga-text/stack.json", "expected on_top_of")


def test_metrics_of_another_layout_are_named_by_the_report(project, capsys):
    metrics = project / "metrics" / "vanilla.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"forget": 3}')
    code, _, err = run_cli(["report"], capsys)
    _assert_one_clean_line(code, err, "metrics/vanilla.json", "forget: expected {modality")
    assert not (project / "reports").exists()


@pytest.mark.parametrize(("content", "needle"), [
    ('{"forget": ', "not valid JSON"),  # cut short: an interrupted copy
    ("[0.5, 0.25]", "expected a JSON object, found list"),
])
def test_a_malformed_output_of_an_earlier_stage_is_named(project, capsys, content, needle):
    """The report reads every model's metrics, an attack the vanilla rates: a file that is not a JSON
    object ends in one line naming it, not a traceback, and the report writes nothing."""
    metrics = project / "metrics" / "vanilla.json"
    attacks = project / "metrics" / "attacks" / "vanilla.json"
    for path in (metrics, attacks):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    code, _, err = run_cli(["report"], capsys)
    _assert_one_clean_line(code, err, "metrics/vanilla.json", needle)
    assert not (project / "reports").exists()
    assert run_cli(["data", "synth"], capsys)[0] == 0 and run_cli(["split"], capsys)[0] == 0
    code, _, err = run_cli(["attack", "--model", "ga-text"], capsys)
    _assert_one_clean_line(code, err, "metrics/attacks/vanilla.json", needle)
    attacks.write_text("{}")  # the rates read; the vanilla's per-fact records cut short
    records = project / "reports" / "attacks" / "vanilla.jsonl"
    records.parent.mkdir(parents=True)
    records.write_text('{"attack": "sample"}\n{"attack": ')
    code, _, err = run_cli(["attack", "--model", "ga-text"], capsys)
    _assert_one_clean_line(code, err, "reports/attacks/vanilla.jsonl", "line 2 is not valid JSON")
