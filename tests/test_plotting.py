"""plotting.plot_training_log: one line per logged key, from rows, log.jsonl, training.json or a folder."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sar3d_core.plotting import plot_training_log  # noqa: E402


def make_rows(n=7, scales=3):
    rows = [{"step": 2 * (i + 1), "loss": 5.0 - 0.5 * i, "lr": 1e-3, **{f"acc_s{j + 1}": 10.0 * j + i
                                                                        for j in range(scales)}}
            for i in range(n)]
    rows.insert(3, {"step": 7, "eval_loss": 4.0})  # a row of other keys: skipped by the lines above
    return rows


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_one_line_per_key_with_one_point_per_row_that_holds_it():
    rows = make_rows()
    ax = plot_training_log(rows, ["loss", "lr"])
    assert [line.get_label() for line in ax.get_lines()] == ["loss", "lr"]
    for line in ax.get_lines():
        assert len(line.get_xdata()) == 7
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [2, 4, 6, 8, 10, 12, 14])
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [5.0 - 0.5 * i for i in range(7)])
    assert ax.get_xlabel() == "step"


def test_glob_keys_expand_in_natural_order_with_labels_on_a_given_axis():
    rows = make_rows(n=4, scales=11)
    _, (ax0, ax1) = plt.subplots(1, 2)
    out = plot_training_log(rows, "acc_s*", ax=ax1, labels=[f"scale {j + 1}" for j in range(11)],
                            ylabel="token accuracy (%)")
    assert out is ax1 and not ax0.get_lines()
    assert [line.get_label() for line in ax1.get_lines()] == [f"scale {j + 1}" for j in range(11)]
    np.testing.assert_array_equal(ax1.get_lines()[10].get_ydata(), [100.0 + i for i in range(4)])
    assert ax1.get_ylabel() == "token accuracy (%)" and ax1.get_legend() is not None


def test_smoothing_is_a_trailing_mean_of_the_same_length():
    rows = [{"step": i, "loss": float(v)} for i, v in enumerate([4, 2, 6, 0, 2])]
    y = plot_training_log(rows, "loss", smooth=2).get_lines()[0].get_ydata()
    np.testing.assert_allclose(y, [4, 3, 4, 3, 1])


def test_reads_log_jsonl_training_json_and_folders(tmp_path):
    rows = make_rows()
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "training.json").write_text(json.dumps({"command": "sar3d train ar", "log": rows}))
    for source in (run / "log.jsonl", run, ckpt / "training.json", ckpt, str(ckpt)):
        line = plot_training_log(source, "loss").get_lines()[0]
        assert len(line.get_ydata()) == 7


@pytest.mark.parametrize("kwargs, match", [
    (dict(keys="accuracy"), "no logged value 'accuracy': the log holds step, loss, lr, acc_s1"),
    (dict(keys=["loss", "val_*"]), "no logged value 'val_\\*'"),
    (dict(keys="loss", x="epoch"), "for the x axis"),
    (dict(keys="loss", smooth=0), "smooth=0"),
    (dict(keys="acc_s*", labels=["one"]), "1 labels for 3 keys"),
])
def test_bad_keys_raise_one_line_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        plot_training_log(make_rows(), **kwargs)
    assert "\n" not in str(info.value)


def test_missing_files_and_empty_logs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no log.jsonl or training.json"):
        plot_training_log(tmp_path, "loss")
    with pytest.raises(ValueError, match="no rows"):
        plot_training_log([], "loss")
    (tmp_path / "training.json").write_text(json.dumps({"command": "x"}))
    with pytest.raises(ValueError, match="without a 'log'"):
        plot_training_log(tmp_path / "training.json", "loss")
