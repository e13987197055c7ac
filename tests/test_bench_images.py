"""`ede bench images`: the 28x28 tasks it builds, and a tiny run through the command line."""

import json

import numpy as np
import pytest

from ede.bench.image_data import digit_images, one_vs_rest
from ede.bench.images import N_ANOMALY, N_NORMAL
from ede.cli import main
from ede.cli.parser import build_parser
from ede.data.protocol import semi_supervised_split


def test_digit_images_are_28x28_in_unit_range_distinct_and_seeded():
    a = digit_images(3, 400, seed=0)  # more than the ~180 originals of a digit
    assert a.shape == (400, 1, 28, 28) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.std() > 0.1
    assert len(np.unique(a.reshape(len(a), -1), axis=0)) == 400
    np.testing.assert_array_equal(a, digit_images(3, 400, seed=0))
    assert not np.array_equal(a, digit_images(3, 400, seed=1))


def test_one_vs_rest_counts_and_shares_the_anomalies_out():
    X, y = one_vs_rest(2, n_normal=90, n_anomaly=20, seed=0)
    assert X.shape == (110, 1, 28, 28) and (y == 0).sum() == 90 and (y == 1).sum() == 20
    X2, y2 = one_vs_rest(2, n_normal=90, n_anomaly=20, seed=0)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)


def test_default_task_size_trains_on_at_least_5000_images():
    """The protocol's arithmetic on the default counts (labels only: no images drawn)."""
    y = np.r_[np.zeros(N_NORMAL), np.ones(N_ANOMALY)].astype(np.int64)
    split = semi_supervised_split(np.zeros((len(y), 1)), y, seed=0, gamma_l=0.05)
    assert len(split.y_train) >= 5000 and split.n_labelled > 0


def test_cli_parses_the_options():
    args = build_parser().parse_args(
        ["bench", "images", "--tasks", "1,7", "--seeds", "2", "--json", "r.json"]
    )
    assert (args.bench, args.tasks, args.seeds, args.gamma_l) == ("images", ["1", "7"], 2, 0.05)


def test_tiny_run_through_the_command_line(tmp_path, capsys):
    out = tmp_path / "images.json"
    args = ["bench", "images", "--tasks", "0", "--methods", "iforest", "--n-normal", "150"]
    assert main([*args, "--n-anomaly", "40", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["results"][0]["dataset"] == "digit 0"
    assert report["mean"]["iforest"]["auroc"] > 0.5
    assert "| digit 0 |" in capsys.readouterr().out


def test_unknown_method_fails_before_any_work():
    from ede.bench.images import run_images

    with pytest.raises(ValueError, match="unknown method"):
        run_images(tasks=[0], methods=["nope"])


def test_images_get_their_own_step_cap_and_tables_keep_theirs():
    """`image_max_steps` caps the conv model's budget only; --epochs lifts it as it lifts
    the tables' floor and cap."""
    from ede import ESAD
    from ede.core.estimator import with_epochs
    from ede.core.training import planned_epochs

    det = ESAD()
    table, image = det.train_config(), det.train_config(image=True)
    assert (table.min_steps, table.max_steps) == (1000, 3000)
    assert image.max_steps == det.image_max_steps
    assert planned_epochs(image, steps_per_epoch=20) * 20 == det.image_max_steps
    assert planned_epochs(table, steps_per_epoch=20) == 100
    assert with_epochs(det, 7).train_config(image=True).max_steps is None
