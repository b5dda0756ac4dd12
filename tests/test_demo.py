"""train.demo: the engine end to end (modules, SGD, cross-entropy) learns two spirals."""
import pytest

from train import demo


@pytest.mark.parametrize("variant", ["coupled", "residual"])
def test_highway_mlp_learns_two_spirals(variant):
    accuracy = demo.main(["--variant", variant, "--layers", "6", "--width", "64",
                          "--steps", "800", "--device", "cpu"])
    assert accuracy > 0.9   # a linear classifier gets about 0.5 on two spirals


def test_bad_arguments_are_rejected(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--layers", "0"])
    assert "--layers must be at least 1" in capsys.readouterr().err
