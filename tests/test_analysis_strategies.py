"""ICL peak and ICL/CIWL crossover detection on a hand-written eval log."""

import pandas as pd

from coopetition.analysis.strategies import detect_events, strategies_table

FLIP = {0: 0.5, 100: 0.6, 200: 0.9, 300: 0.8, 400: 0.6, 500: 0.3, 600: 0.1}
ICL = {0: 0.5, 100: 0.55, 200: 0.7, 300: 0.95, 400: 0.9, 500: 0.8, 600: 0.7}


def log() -> pd.DataFrame:
    rows = [{"step": s, "sequences": 32 * s, "evaluator": e, "metric": "in_context_acc", "value": v}
            for e, curve in (("flip", FLIP), ("icl", ICL)) for s, v in curve.items()]
    rows += [{"step": s, "sequences": 32 * s, "evaluator": "flip", "metric": "loss", "value": 1.0} for s in FLIP]
    return pd.DataFrame(rows)


def test_events():
    events = {e["metric"]: e for e in detect_events(log())}
    assert events["icl_peak"]["step"] == 200 and events["icl_peak"]["value"] == 0.9
    assert events["icl_eval_peak"]["step"] == 300
    assert abs(events["crossover"]["step"] - 433) <= 1  # 0.6 -> 0.3 between 400 and 500 crosses 0.5 a third in
    assert events["crossover"]["sequences"] == round(32 * 433.33)


def test_no_icl_peak_when_flip_never_beats_chance():
    table = log()
    table.loc[table["evaluator"] == "flip", "value"] = 0.2
    assert "icl_peak" not in {e["metric"] for e in detect_events(table)}


def test_table_is_windowed_and_tidy():
    table = strategies_table(log(), 100, 400)
    assert list(table.columns) == ["step", "sequences", "evaluator", "metric", "value"]
    assert table["step"].between(100, 400).all()
    assert set(table["metric"]) == {"in_context_acc", "loss", "icl_peak", "icl_eval_peak"}
