import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from mlcore.evaluate import FEE_PER_SIDE, calibration, evaluate, main, summary
from mlcore.labels import HORIZONS
from mlcore.train import PRESETS, synthetic_frames, train

BASELINES = ("always_flat", "stratified_random", "buy_and_hold", "ema_rsi", "logistic_regression")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model trained on the first 3000 candles, evaluated on the 1500 after them."""
    tmp = tmp_path_factory.mktemp("eval")
    frames = synthetic_frames(n=4500, timeframe="15m")
    cut = next(iter(frames.values())).index[3000]
    train(
        frames={s: df[df.index < cut] for s, df in frames.items()},
        config=replace(PRESETS["tiny"], num_threads=1),
        out=tmp / "tiny.pt",
        progress=False,
    )
    result = evaluate(
        checkpoint=tmp / "tiny.pt", frames=frames, start=cut, out_dir=tmp, progress=False
    )
    return frames, cut, result


def test_report_scores_model_and_every_baseline_on_the_same_samples(setup):
    frames, cut, result = setup
    report = result.report
    assert pd.Timestamp(report["range"]["from"]) >= cut
    n = sum(report["samples"].values())
    assert n > 2000
    for h in HORIZONS:
        block = report["horizons"][f"h{h}"]
        for name in ("model", *BASELINES):
            cm = np.asarray(block[name]["confusion"])
            assert cm.sum() == n, (h, name)  # every predictor scored on all samples
            assert 0.0 <= block[name]["accuracy"] <= 1.0
            assert block[name]["accuracy"] == pytest.approx(np.trace(cm) / n)
        # Constant predictors score exactly the share of their class.
        assert block["always_flat"]["accuracy"] == pytest.approx(block["class_share"][1], abs=1e-4)
        assert block["buy_and_hold"]["accuracy"] == pytest.approx(block["class_share"][2], abs=1e-4)
        for name in ("model", "logistic_regression", "stratified_random"):
            cal = block[name]["calibration"]
            assert 0.0 <= cal["ece"] <= 1.0
            assert 0.0 <= cal["brier"] <= 2.0


def test_pnl_of_the_baselines_follows_their_definition(setup):
    frames, cut, result = setup
    pnl = result.report["pnl_h4"]
    assert set(pnl) == {"model", "model_gated", *BASELINES}
    flat = pnl["always_flat"]
    assert flat["portfolio_total_return"] == 0.0
    assert all(s["position_changes"] == 0 for s in flat["symbols"].values())
    # Buy and hold: long over every 4-candle decision period, fee on entry and on exit.
    first = pd.Timestamp(result.report["range"]["from"])
    for symbol, stats in pnl["buy_and_hold"]["symbols"].items():
        assert stats["position_changes"] == 1
        assert stats["time_in_market"] == 1.0
        close = frames[symbol]["close"].to_numpy()
        t0 = frames[symbol].index.get_loc(first)
        decisions = np.arange(t0, len(close) - 48, 4)  # targets need 48 candles ahead
        net = close[decisions + 4] / close[decisions] - 1
        net[0] -= FEE_PER_SIDE
        net[-1] -= FEE_PER_SIDE
        assert stats["total_return"] == pytest.approx(np.prod(1 + net) - 1, rel=1e-6)  # float32
    assert set(pnl["ema_rsi"]["symbols"]) == set(frames)
    # The gated model trades a subset of the model's calls.
    for symbol, stats in pnl["model_gated"]["symbols"].items():
        assert stats["time_in_market"] <= pnl["model"]["symbols"][symbol]["time_in_market"]


def test_files_are_written(setup):
    _, _, result = setup
    assert json.loads(result.json_path.read_text())["version"] == result.report["version"]
    assert result.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = summary(result.report)
    assert "logistic_regression" in text
    assert "ema_rsi" in text


def test_calibration_of_perfect_and_uniform_forecasts():
    true = np.array([0, 1, 2, 2, 1, 0])
    perfect = np.eye(3)[true]
    good = calibration(true, perfect)
    assert good["brier"] == pytest.approx(0.0)
    assert good["ece"] == pytest.approx(0.0)
    uniform = calibration(true, np.full((6, 3), 1 / 3))
    assert uniform["brier"] == pytest.approx(2 / 3)


def test_cli(tmp_path, setup, capsys):
    frames, cut, _ = setup
    csvs = []
    for symbol, df in frames.items():
        path = tmp_path / f"{symbol}-15m.csv"
        out = pd.DataFrame({"timestamp": df.index.as_unit("ms").asi8}).join(
            df.reset_index(drop=True)
        )
        out.to_csv(path, index=False)
        csvs.append(path)
    ckpt = tmp_path / "tiny.pt"
    train(
        frames={s: df[df.index < cut] for s, df in frames.items()},
        config=replace(PRESETS["tiny"], num_threads=1),
        out=ckpt,
        progress=False,
    )
    args = ["--checkpoint", str(ckpt), "--from", str(cut.date()), "--out-dir", str(tmp_path)]
    for path in csvs:
        args += ["--csv", str(path)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "model" in printed
    assert "wrote" in printed


def test_fee_is_a_tenth_of_a_percent_round_trip():
    assert 2 * FEE_PER_SIDE == pytest.approx(0.001)
