"""`sar3d eval vqvae`, `sar3d eval generation` and `sar3d train clip` are the modules' own mains
(one implementation each, also reachable as `python -m sar3d_core.<module>`)."""
import pytest

from sar3d_core.cli import DELEGATED, build_parser, main


@pytest.mark.parametrize("words,option", [(("eval", "vqvae"), "--checkpoint"), (("eval", "generation"), "--next-token"),
                                          (("train", "clip"), "--epochs")])
def test_delegated_commands_show_the_modules_options(words, option, capsys):
    assert main([*words, "--help"]) == 0
    assert option in capsys.readouterr().out


def test_delegated_commands_are_listed_in_the_help_and_reject_bad_options(capsys):
    for words in DELEGATED:
        assert words[1] in build_parser()._subparsers._group_actions[0].choices[words[0]].format_help()
    assert main(["train", "clip", "--epochs", "many"]) == 2
    assert "invalid int value" in capsys.readouterr().err
