"""train.demo: the engine end to end (modules, SGD, cross-entropy) learns two spirals."""
import pytest

from train import demo


@pytest.mark.parametrize("variant, lr", [("coupled", "0.5"), ("residual", "0.3")])
def test_highway_mlp_learns_two_spirals(variant, lr):
    # 300 steps of a 4-layer net (under a second): over seeds 0-7 the test accuracy was at
    # least 0.95, with one BLAS thread or two; a linear classifier gets about 0.5.
    accuracy = demo.main(["--variant", variant, "--layers", "4", "--width", "64",
                          "--steps", "300", "--lr", lr, "--device", "cpu"])
    assert accuracy > 0.9


@pytest.mark.parametrize("argv, message", [
    (["--layers", "0"], "--layers must be at least 1, got 0"),
    (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["--lr", "-1"], "--lr must be a positive finite number, got -1.0"),
    (["--seed", "-1"], "--seed must be 0 or more, got -1")])
def test_bad_arguments_are_rejected(capsys, argv, message):
    with pytest.raises(SystemExit):
        demo.main(argv)
    assert message in capsys.readouterr().err


def test_a_net_too_large_for_memory_is_refused_before_it_is_built():
    with pytest.raises(SystemExit, match=r"^error: one training step needs about .* GiB .* with "
                                         r"--layers 100000 --width 100000 --batch 128, but only"):
        demo.main(["--layers", "100000", "--width", "100000", "--device", "cpu"])
