"""A/B assignment, the append-only sink and the readout. The lift test replays a SYNTHETIC log
(made-up users and clicks, named as such: no real traffic exists here) with a planted lift through
the real sink and recovers it within its CI; an A/A log finds no lift."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hllm_creator.publish.ab import ab_report
from hllm_creator.serving.experiment import (
    CONTROL,
    EXPOSURES,
    FEEDBACK,
    PERSONALIZED,
    EventSink,
    Experiment,
    assign,
    exposure_event,
    read_events,
)


def test_assignment_is_deterministic_salted_and_respects_the_share():
    users = [f"u{i}" for i in range(20000)]
    a = [assign(u, "exp1", 0.3) for u in users]
    assert a == [assign(u, "exp1", 0.3) for u in users]  # same answer every time (and in every process)
    share = a.count(PERSONALIZED) / len(a)
    assert abs(share - 0.3) < 0.015
    b = [assign(u, "exp2", 0.3) for u in users]
    assert 0.3 < np.mean([x != y for x, y in zip(a, b)]) < 0.5  # another salt reshuffles users
    assert {assign(u, "s", 0.0) for u in users[:200]} == {CONTROL}
    assert {assign(u, "s", 1.0) for u in users[:200]} == {PERSONALIZED}
    with pytest.raises(ValueError, match="share"):
        Experiment("x", 1.5)
    with pytest.raises(ValueError, match="salt"):
        Experiment(" ")


def test_sink_skips_a_torn_last_line_and_keeps_segments(tmp_path):
    s1 = EventSink(tmp_path, EXPOSURES)
    s1.write([{"exposure_id": "a"}, {"exposure_id": "b"}])
    with open(s1.path, "ab") as f:  # what a kill in the middle of a write leaves
        f.write(b'{"exposure_id": "c", "ti')
    s2 = EventSink(tmp_path, EXPOSURES)
    s2.write([{"exposure_id": "d"}])
    ev, torn = read_events(tmp_path, EXPOSURES)
    assert [e["exposure_id"] for e in ev] == ["a", "b", "d"] and torn == 1
    assert s1.path != s2.path


def synthetic_log(sink_dir, *, n_users: int, ctr_control: float, lift: float, salt: str, seed: int = 0,
                  per_user: int = 4) -> None:
    """SYNTHETIC data: made-up users see ``per_user`` ads each; clicks are Bernoulli with the control
    CTR, times (1 + lift) for personalized users; written through the real sink."""
    rng = np.random.default_rng(seed)
    ex_sink, fb_sink = EventSink(sink_dir, EXPOSURES), EventSink(sink_dir, FEEDBACK)
    exp, fb = [], []
    for i in range(n_users):
        u = f"synthetic-user-{i}"
        v = assign(u, salt, 0.5)
        p = ctr_control * (1 + lift) if v == PERSONALIZED else ctr_control
        for j in range(per_user):
            e = exposure_event(experiment=salt, user_id=u, ad_id=f"ad{j}", cluster_id=0, variant=v, title="t",
                               personalized=v == PERSONALIZED, model_version="7", bundle_id="b")
            exp.append(e)
            if rng.random() < p:
                fb.append({"exposure_id": e["exposure_id"], "event": "click"})
    ex_sink.write(exp)
    fb_sink.write(fb)


def test_readout_recovers_a_planted_lift_and_logs_it(tmp_path):
    from hllm_creator import tracking

    synthetic_log(tmp_path / "ab", n_users=20000, ctr_control=0.05, lift=0.25, salt="synthetic-planted")
    # the model version the exposures name is registered: the readout lands on it
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "f").write_text("x")
    for _ in range(7):
        with tracking.step_run("train"):
            tracking.register_model(tmp_path / "m")
    s = ab_report(tmp_path / "ab", experiment="synthetic-planted", out_dir=tmp_path / "out", n_boot=400)
    assert s["lift_ci_low"] < 0.25 < s["lift_ci_high"], s
    assert s["lift_ci_low"] > 0 and s["significant"]
    c, p = s["variants"][CONTROL], s["variants"][PERSONALIZED]
    assert c["ctr_ci_low"] < 0.05 < c["ctr_ci_high"] and p["ctr_ci_low"] < 0.0625 < p["ctr_ci_high"]
    assert c["exposures"] + p["exposures"] == 80000 and s["model_version"] == "7"
    assert (tmp_path / "out" / "ab_report.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "ab_report.json").read_text())["lift"] == s["lift"]
    import mlflow

    client = mlflow.MlflowClient(tracking.resolve_tracking_uri())
    run = client.get_run(s["mlflow_run_id"])
    assert run.data.tags["model_version"] == "7" and run.data.metrics["ab_lift"] == pytest.approx(s["lift"])
    assert float(client.get_model_version(tracking.MODEL_NAME, "7").tags["ab_lift"]) == pytest.approx(s["lift"], rel=1e-5)


def test_readout_of_an_aa_log_finds_no_lift(tmp_path):
    synthetic_log(tmp_path, n_users=20000, ctr_control=0.05, lift=0.0, salt="synthetic-aa", seed=1)
    s = ab_report(tmp_path, log_to_mlflow=False, n_boot=400)
    assert s["lift_ci_low"] < 0 < s["lift_ci_high"] and not s["significant"]


def test_readout_errors_say_what(tmp_path):
    with pytest.raises(ValueError, match="no exposure events"):
        ab_report(tmp_path, log_to_mlflow=False)
    synthetic_log(tmp_path, n_users=50, ctr_control=0.1, lift=0.0, salt="synthetic-x")
    with pytest.raises(ValueError, match="experiment 'other'"):
        ab_report(tmp_path, experiment="other", log_to_mlflow=False)
