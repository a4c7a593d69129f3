"""The factuality judge against a real OpenAI client talking to a local OpenAI-compatible server."""

from __future__ import annotations

import pytest

from mmunlearn.config import JudgeConfig
from mmunlearn.errors import ConfigError
from mmunlearn.evaluation.judge import FactualityJudge, JudgeCase, build_judge, parse_score
from tests.evaluation.openai_server import OpenAICompatibleServer


@pytest.mark.parametrize("reply, score", [
    ("7", 7), ("Score: 7", 7), ("score:10", 10), ("**Score:** 8/10", 8), ("Rating = 9.", 9),
    ("I'd give it 3 out of 10.", 3), ("The score is 2", 2), ("Score: 6\nThe answer names the right city.", 6),
    ("Score: 5.0", 5),
])
def test_a_score_is_parsed_from_varied_replies(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", [
    "", None, "The answer is right.", "Score: 11", "Score: 0", "Score: 7.5", "Score: 7, or maybe Score: 8",
    "7 or 8", "somewhere between 6/10 and 8/10",
])
def test_replies_without_exactly_one_valid_score_are_rejected(reply):
    assert parse_score(reply) is None


CASES = [JudgeCase("Where does Ana Kerr live?", "Ana Kerr lives in Oulu, Finland.", f"Ana Kerr lives in {city}.")
         for city in ("Oulu, Finland", "Porto, Portugal", "Lima, Peru")]


def _judge(tmp_path, server, **settings) -> FactualityJudge:
    config = JudgeConfig(enabled=True, model=settings.pop("model", "judge-small"), base_url=server.base_url,
                         cache=tmp_path / "cache.sqlite", backoff_s=0.0, **settings)
    return build_judge(config)


def _last_case(messages: list[dict]) -> str:
    return messages[-1]["content"]


def test_malformed_replies_are_retried_then_recorded_as_failures(tmp_path):
    asked: dict[str, int] = {}

    def reply(messages):
        case = _last_case(messages)
        asked[case] = asked.get(case, 0) + 1
        if "Oulu" in case.split("Model answer:")[1]:
            return "Score: 9" if asked[case] > 1 else "Looks right to me."  # malformed once, then fine
        return "Hard to say."  # never a score

    with OpenAICompatibleServer(reply) as server:
        judge = _judge(tmp_path, server, max_retries=2, concurrency=2)
        verdicts = judge.score_all(CASES)
    assert verdicts[0].score == 9 and not verdicts[0].error
    assert [v.score for v in verdicts[1:]] == [None, None]
    assert all("no score in reply 'Hard to say.'" in v.error for v in verdicts[1:])
    assert len(server.requests) == 2 + 3 + 3  # one retry; then 1 + max_retries attempts each
    assert judge.usage.summary()["failures"] == 2 and judge.usage.requests == 8


def test_server_errors_are_retried_and_timeouts_end_as_failures(tmp_path):
    calls = []

    def flaky(messages):
        calls.append(1)
        return 500 if len(calls) == 1 else "Score: 4"

    with OpenAICompatibleServer(flaky) as server:
        assert _judge(tmp_path, server, max_retries=1).score_all(CASES[:1])[0].score == 4
    assert len(calls) == 2
    with OpenAICompatibleServer(lambda messages: "Score: 4", delay_s=1.0) as server:
        verdict = _judge(tmp_path, server, max_retries=1, timeout_s=0.2, model="slow").score_all(CASES[:1])[0]
    assert verdict.score is None and "Timeout" in verdict.error


def test_a_server_error_that_quotes_the_key_never_logs_it(tmp_path, monkeypatch, caplog, capsys):
    """A 500 whose body echoes the request's Authorization header: the key stays out of logs and verdicts,
    each distinct failure is logged once, and the unscored answers are counted."""
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-secret-4321")
    with OpenAICompatibleServer(lambda messages: 500) as server:
        verdicts = _judge(tmp_path, server, api_key_env="MY_JUDGE_KEY", max_retries=1).score_all(CASES)
    assert server.authorizations[0] == "Bearer sk-test-secret-4321"
    assert [v.score for v in verdicts] == [None, None, None]
    assert all("Authorization: Bearer ***" in v.error for v in verdicts)
    out, err = capsys.readouterr()
    for text in (caplog.text, out, err, *(v.error for v in verdicts)):
        assert "secret-4321" not in text
    assert caplog.text.count("simulated failure") == 1
    assert "3 of 3 answers got no score" in caplog.text


@pytest.mark.parametrize("status, reason", [
    (401, r"does not accept the key in \$MY_JUDGE_KEY"),
    (403, r"gives the key in \$MY_JUDGE_KEY no access to model 'judge-small'"),
    (404, r"has no model 'judge-small'"),
])
def test_a_refusal_of_the_settings_stops_the_judging_at_once(tmp_path, monkeypatch, caplog, status, reason):
    """Retried, a wrong key cost 1 + max_retries requests with backoff for every answer of every model."""
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-secret-4321")
    cases = [JudgeCase(f"Where does person {i} live?", "In Oulu.", "In Lima.") for i in range(40)]
    with OpenAICompatibleServer(lambda messages: status) as server:
        judge = _judge(tmp_path, server, api_key_env="MY_JUDGE_KEY", concurrency=2)
        with pytest.raises(ConfigError, match=f"^evaluation.judge: {server.base_url} answered {status}: it {reason}"
                           ) as refused:
            judge.score_all(cases)
    assert server.authorizations[0] == "Bearer sk-test-secret-4321"  # the server saw the key and quoted it
    assert len(server.requests) < 10  # the in-flight ones at most, not 40 × 4
    assert "secret" not in str(refused.value) and "secret" not in caplog.text


def test_a_second_run_makes_zero_requests_and_a_new_judge_model_asks_again(tmp_path):
    def by_city(messages):
        answer = _last_case(messages).split("Model answer:")[1]
        return "Score: 10" if "Oulu" in answer else "Score: 2"

    with OpenAICompatibleServer(by_city) as server:
        first = _judge(tmp_path, server).score_all(CASES + CASES[:1])  # a repeated case is asked once
        assert len(server.requests) == 3
        again = _judge(tmp_path, server)
        second = again.score_all(CASES)
        assert len(server.requests) == 3 and again.usage.cache_hits == 3 and again.usage.requests == 0
        _judge(tmp_path, server, model="judge-large").score_all(CASES)
        assert len(server.requests) == 6
    assert [v.score for v in first] == [10, 2, 2, 10]
    assert [v.score for v in second] == [10, 2, 2] and all(v.cached for v in second)
    # the demonstrations and rubric travel with every request; the case comes last
    sent = server.requests[0]["messages"]
    assert sent[0]["role"] == "system" and "1 to 10" in sent[0]["content"] and len(sent) > 3


def test_usage_summary_prices_tokens_when_prices_are_given(tmp_path):
    with OpenAICompatibleServer(lambda messages: "Score: 5") as server:
        judge = _judge(tmp_path, server, usd_per_million_input_tokens=2.5, usd_per_million_output_tokens=10.0)
        judge.score_all(CASES)
    summary = judge.usage.summary()
    assert (summary["requests"], summary["prompt_tokens"], summary["completion_tokens"]) == (3, 300, 9)
    assert summary["cost_usd"] == pytest.approx((300 * 2.5 + 9 * 10.0) / 1e6)


def test_an_enabled_judge_without_key_or_server_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert build_judge(JudgeConfig()) is None  # off by default: no network, factuality "n/a"
    with pytest.raises(ConfigError, match=r"\$MY_JUDGE_KEY is not set"):
        build_judge(JudgeConfig(enabled=True, api_key_env="MY_JUDGE_KEY"))


def test_a_judge_server_that_does_not_answer_is_named_before_any_answer_is_asked(tmp_path):
    with OpenAICompatibleServer(lambda messages: "Score: 5") as server:
        base_url = server.base_url
    with pytest.raises(ConfigError, match=f"^evaluation.judge.base_url: {base_url} cannot be reached .*refused"):
        build_judge(JudgeConfig(enabled=True, base_url=base_url, cache=tmp_path / "cache.sqlite"))


def test_the_server_in_openai_base_url_is_the_one_checked_and_asked(tmp_path, monkeypatch):
    # the openai client honours $OPENAI_BASE_URL where base_url is unset: a check of api.openai.com instead
    # refused a judge that would have worked offline, and asked for a key that server does not need
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    with OpenAICompatibleServer(lambda messages: "Score: 6") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        judge = build_judge(JudgeConfig(enabled=True, api_key_env="MY_JUDGE_KEY", cache=tmp_path / "cache.sqlite"))
        verdicts = judge.score_all(CASES[:1])
    assert [v.score for v in verdicts] == [6] and len(server.requests) == 1
    with pytest.raises(ConfigError, match=f"^evaluation.judge.base_url: {server.base_url} cannot be reached"):
        build_judge(JudgeConfig(enabled=True, api_key_env="MY_JUDGE_KEY", cache=tmp_path / "cache.sqlite"))


def test_a_base_url_password_is_masked_in_errors(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-secret-4321")
    with OpenAICompatibleServer(lambda messages: 401) as server:
        base_url = server.base_url.replace("http://", "http://judge:pw-in-url@")
        judge = build_judge(JudgeConfig(enabled=True, base_url=base_url, api_key_env="MY_JUDGE_KEY",
                                        cache=tmp_path / "cache.sqlite", backoff_s=0.0))
        with pytest.raises(ConfigError) as refused:
            judge.score_all(CASES[:1])
    with pytest.raises(ConfigError) as unreachable:
        build_judge(JudgeConfig(enabled=True, base_url=base_url, cache=tmp_path / "cache.sqlite"))
    for error in (refused, unreachable):
        assert "judge:***@127.0.0.1" in str(error.value) and "pw-in-url" not in str(error.value)
    assert "pw-in-url" not in caplog.text


def test_a_damaged_cache_is_named_before_any_answer_is_asked(tmp_path):
    """Was a traceback from sqlite3, raised once the evaluation had run, with the MLflow run left failed."""
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"garbage" * 200)
    with OpenAICompatibleServer(lambda messages: "Score: 5") as server:
        with pytest.raises(ConfigError, match=rf"^evaluation.judge.cache: {cache} is not a judge cache \(file is not a database\)"):
            build_judge(JudgeConfig(enabled=True, base_url=server.base_url, cache=cache))
    assert len(server.requests) == 0


@pytest.mark.parametrize("stored", [42, 0, None, 7.5, "seven"])
def test_a_cached_row_that_is_no_score_is_asked_again(tmp_path, stored):
    """A score outside 1..10 written into the cache (by hand, another tool) went into the metrics as is."""
    import sqlite3

    with OpenAICompatibleServer(lambda messages: "Score: 6") as server:
        _judge(tmp_path, server).score_all(CASES[:1])
        with sqlite3.connect(tmp_path / "cache.sqlite") as db:
            db.execute("UPDATE verdicts SET score = ?", (stored,))
        again = _judge(tmp_path, server)
        verdicts = again.score_all(CASES[:1])
    assert [(v.score, v.cached) for v in verdicts] == [(6, False)]
    assert len(server.requests) == 2 and again.usage.cache_hits == 0
