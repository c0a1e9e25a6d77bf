"""Every `sar3d` subcommand on bad arguments and unreadable files: exactly one line on stderr
that says what is wrong, no traceback, a non-zero exit status and no output file.

The commands run in-process (``sar3d_core.cli.main``) so the whole table takes seconds: each
row fails on its arguments or its input files before any training, sampling or rendering.
``sar3d train vqvae`` is left out (its options are being reworked elsewhere).
"""
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT
from sar3d_core.cli import main
from sar3d_core.tokens import save_tokens
from test_cli import sar3d

CHUNK = REPO_ROOT / "data_samples" / "chunks" / "000001"
MUG = REPO_ROOT / "data_samples" / "meshes" / "mug.glb"


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """A folder of bad inputs: ``{name}`` in a row's arguments is replaced by the file's path."""
    root = tmp_path_factory.mktemp("bad")
    (root / "junk.glb").write_bytes(bytes(range(256)) * 4)
    (root / "empty.obj").write_bytes(b"")
    (root / "notes.txt").write_text("hello")
    (root / "empty_dir").mkdir()
    (root / "junk.npz").write_bytes(b"not a zip archive")
    np.savez(root / "tokens_like.npz", format=np.array("sar3d-tokens/1"), schedule=np.array([1, 2]),
             codebook_size=np.array(4), sequence=np.zeros((1, 15), np.int32))  # no source, caption, seed
    data = (root / "tokens_like.npz").read_bytes()
    (root / "truncated.npz").write_bytes(data[: len(data) // 2])
    np.save(root / "array.npy", np.zeros(3))
    (root / "array.npz").write_bytes((root / "array.npy").read_bytes())  # an .npy under an .npz name
    np.savez(root / "no_points.npz", other=np.zeros(3))
    (root / "junk_images").mkdir()
    (root / "junk_images" / "a.png").write_bytes(b"\x89PNG not really")
    (root / "images").mkdir()
    for i in range(2):
        Image.new("RGB", (16, 16), (i * 100, 0, 0)).save(root / "images" / f"{i}.png")
    (root / "junk.png").write_bytes(b"\x89PNG not really")
    Image.new("L", (64, 64), 128).save(root / "grey.png")  # readable, but not a colour image
    Image.new("CMYK", (64, 64)).save(root / "cmyk.jpg")
    Image.new("RGB", (8, 8), (200, 0, 0)).save(root / "speck.png")  # too small to show an object
    Image.new("RGB", (300, 40), (200, 0, 0)).save(root / "strip.png")  # far from square
    (root / "bad_ckpt").mkdir()
    (root / "bad_ckpt" / "config.json").write_text("{not json")
    (root / "bad_ckpt" / "model.safetensors").write_bytes(b"junk")
    (root / "bad_index").mkdir()
    (root / "bad_index" / "index.json").write_text("{truncated")
    (root / "a_file").write_text("I am a file, not a folder")
    schedule = SimpleNamespace(scales=(1, 2), codebook_size=4)  # what save_tokens reads of a config
    save_tokens(root / "good_tokens.npz", np.zeros((1, 15), np.int64), schedule, ["a"], ["a chair"], [-1])
    tiny = SimpleNamespace(scales=(1, 2, 3, 4, 6, 8), codebook_size=1024)  # the shipped generators' schedule
    save_tokens(root / "tiny_schedule_tokens.npz", np.zeros((1, 390), np.int64), tiny, ["a"], ["a chair"], [-1])
    return root


ROWS = [
    # (arguments, a fragment of the one line on stderr)
    # --- no command / unknown command
    ([], "required"),
    (["paint"], "invalid choice"),
    # --- render
    (["render", "proc:notanumber", "--out", "{out}.png"], "proc:<integer seed>"),
    (["render", "{root}/missing.glb", "--out", "{out}.png"], "missing.glb: no such file"),
    (["render", "{root}/junk.glb", "--out", "{out}.png"], "not a readable GLB"),
    (["render", "{root}/empty.obj", "--out", "{out}.png"], "empty.obj: the file is empty"),
    (["render", "{root}/notes.txt", "--out", "{out}.png"], "unsupported input"),
    (["render", "{root}/empty_dir", "--out", "{out}.png"], "neither a chunk"),
    (["render", "proc:3", "--size", "0", "--out", "{out}.png"], "--size: 0 must be at least 1"),
    (["render", "proc:3", "--size", "big", "--out", "{out}.png"], "--size: 'big' is not an integer"),
    (["render", "proc:3", "--views", "0", "--out", "{out}.png"], "--views: 0 must be at least 1"),
    (["render", "proc:3", "--views", "13", "--out", "{out}.png"], "at most 12"),
    (["render", "proc:3", "--up", "x", "--out", "{out}.png"], "--up: invalid choice"),
    (["render", "proc:3", "--up", "y", "--out", "{out}.png"], "applies to mesh files only"),
    (["render", "proc:3"], "required: --out"),
    # --- data build / check / tokenize
    (["data"], "required"),
    (["data", "build", "--count", "-5", "--out", "{out}"], "--count: -5 must be at least 1"),
    (["data", "build", "--count", "0", "--out", "{out}"], "--count: 0 must be at least 1"),
    (["data", "build", "--count", "many", "--out", "{out}"], "'many' is not an integer"),
    (["data", "build", "--count", "1", "--size", "0", "--out", "{out}"], "--size: 0 must be at least 1"),
    (["data", "build", "--count", "1", "--start", "-1", "--out", "{out}"], "--start: -1 must be at least 0"),
    (["data", "build", "--count", "1", "--workers", "0", "--out", "{out}"], "--workers: 0 must be at least 1"),
    (["data", "build", "--count", "1", "--split", "dev", "--out", "{out}"], "--split: invalid choice"),
    (["data", "build", "--count", "1", "--out", "{root}/a_file"], "a_file is a file: give a folder"),
    (["data", "build", "--count", "1", "--out", "{root}/bad_index"], "index.json is not valid JSON"),
    (["data", "check", "{root}/missing.glb"], "no such file"),
    (["data", "check", "{root}/junk.glb"], "not a readable GLB"),
    (["data", "check", "proc:3", "--views", "0"], "--views: 0 must be at least 1"),
    (["data", "check", "proc:3", "--tol-px", "-1"], "--tol-px: -1 must be at least 0"),
    (["data", "check", "proc:3", "--up", "y"], "applies to mesh files only"),
    (["data", "tokenize", "{root}/missing_dir", "--out", "{out}.npz"], "missing_dir"),
    (["data", "tokenize", "{root}/empty_dir", "--out", "{out}.npz"], "not a data set folder"),
    (["data", "tokenize", "{root}/bad_index", "--out", "{out}.npz"], "index.json is not valid JSON"),
    (["data", "tokenize", "{chunk}", "--batch-size", "0", "--out", "{out}.npz"], "--batch-size: 0 must be"),
    (["data", "tokenize", "{chunk}", "--checkpoint", "{root}/missing_ckpt", "--out", "{out}.npz"],
     "missing_ckpt does not exist"),
    (["data", "tokenize", "{chunk}", "--checkpoint", "{root}/bad_ckpt", "--out", "{out}.npz"],
     "config.json is not valid JSON"),
    # --- encode
    (["encode", "{root}/missing.glb", "--out", "{out}.npz"], "no such file"),
    (["encode", "{root}/junk.glb", "--out", "{out}.npz"], "not a readable GLB"),
    (["encode", "{mug}", "--up", "Y", "--out", "{out}.npz"], "--up: invalid choice"),
    (["encode", "proc:3", "--refine-steps", "-1", "--out", "{out}.npz"], "--refine-steps: -1 must be at least 0"),
    (["data", "tokenize", "{chunk}", "--refine-steps", "x", "--out", "{out}.npz"], "--refine-steps: 'x' is not an integer"),
    (["data", "tokenize", "{chunk}", "--refine-steps", "5", "--refine-rays", "0", "--out", "{out}.npz"],
     "--refine-rays: 0 must be at least 1"),
    (["data", "tokenize", "{chunk}", "--limit", "0", "--out", "{out}.npz"], "--limit: 0 must be at least 1"),
    # --- data token-draws
    (["data", "token-draws", "--generator", "{root}/missing_gen", "--tokens", "{root}/good_tokens.npz",
      "--out", "{out}.npz"], "sar3d train ar"),
    (["data", "token-draws", "--generator", "{repo}/data_samples/ar_text_tiny", "--tokens", "{root}/missing.npz",
      "--out", "{out}.npz"], "missing.npz: no such token file"),
    (["data", "token-draws", "--generator", "{repo}/data_samples/ar_text_tiny", "--tokens", "{root}/good_tokens.npz",
      "--out", "{out}.npz"], "holds tokens of scales (1, 2) with 4 codes, not the generator's"),
    (["data", "token-draws", "--generator", "{repo}/data_samples/ar_image_tiny", "--tokens", "{root}/good_tokens.npz",
      "--out", "{out}.npz"], "not a next-scale text generator"),
    (["data", "token-draws", "--generator", "{repo}/data_samples/ar_text_tiny", "--tokens", "{root}/good_tokens.npz",
      "--data", "{root}/empty_dir", "--out", "{out}.npz"], "no index.json"),
    (["data", "token-draws", "--generator", "{repo}/data_samples/ar_text_tiny", "--tokens", "{root}/good_tokens.npz",
      "--draws", "0", "--out", "{out}.npz"], "--draws: 0 must be at least 1"),
    (["data", "token-draws", "--generator", "{repo}/data_samples/ar_text_tiny", "--tokens", "{root}/good_tokens.npz",
      "--keep", "0", "--out", "{out}.npz"], "--keep: 0 must be at least 1"),
    (["data", "token-draws", "--generator", "{repo}/data_samples/ar_text_tiny", "--tokens",
      "{root}/tiny_schedule_tokens.npz", "--keep", "6", "--out", "{out}.npz"], "keep fewer than the generator's 6"),
    (["encode", "proc:3", "--checkpoint", "{root}/bad_ckpt", "--out", "{out}.npz"], "config.json is not valid"),
    # --- decode
    (["decode", "{root}/missing.npz", "--out", "{out}.png"], "no such token file"),
    (["decode", "{root}/junk.npz", "--out", "{out}.png"], "junk.npz is not a readable .npz token file"),
    (["decode", "{root}/truncated.npz", "--out", "{out}.png"], "truncated.npz is not a readable .npz token file"),
    (["decode", "{root}/array.npz", "--out", "{out}.png"], "one .npy array, not an archive"),
    (["decode", "{root}/no_points.npz", "--out", "{out}.png"], "format 'none'"),
    (["decode", "{root}/tokens_like.npz", "--out", "{out}.png"], "lacks the array(s) source, caption, seed"),
    (["decode", "{root}/junk.npz", "--scales", "0", "--out", "{out}.png"], "--scales: 0 must be at least 1"),
    (["decode", "{root}/junk.npz", "--views", "0", "--out", "{out}.png"], "--views: 0 must be at least 1"),
    (["decode", "{root}/junk.npz", "--size", "-4", "--out", "{out}.png"], "--size: -4 must be at least 1"),
    # --- eval points / images
    (["eval", "points", "{root}/missing.npz", "{root}/no_points.npz", "--json", "{out}.json"], "no such file"),
    (["eval", "points", "{root}/junk.npz", "{root}/no_points.npz", "--json", "{out}.json"], "not a readable .npz"),
    (["eval", "points", "{root}/no_points.npz", "{root}/no_points.npz", "--json", "{out}.json"], "holds no array"),
    (["eval", "points", "{root}/no_points.npz", "{root}/no_points.npz", "--emd-points", "0"],
     "--emd-points: 0 must be at least 1"),
    (["eval", "points", "{root}/no_points.npz", "{root}/no_points.npz", "--normalize", "unit"],
     "--normalize: invalid choice"),
    (["eval", "images", "{root}/missing_dir", "{root}/images", "--json", "{out}.json"], "no such folder"),
    (["eval", "images", "{root}/empty_dir", "{root}/images", "--json", "{out}.json"], "holds no PNG/JPEG"),
    (["eval", "images", "{root}/junk_images", "{root}/images", "--json", "{out}.json"], "not a readable image"),
    (["eval", "images", "{root}/images", "{root}/images", "--size", "8"], "--size 8 must be at least 16"),
    (["eval", "images", "{root}/images", "{root}/images", "--kid-subsets", "0"], "--kid-subsets: 0 must be"),
    (["eval", "images", "{root}/images", "{root}/images", "--kid-subset-size", "1"], "--kid-subset-size: 1 must"),
    (["eval", "images", "{root}/images", "{root}/images", "--inception", "{root}/missing.pth"], "no such file"),
    # --- train featnet / ar (bad flags and files only: nothing trains)
    (["train"], "required"),
    (["train", "featnet", "--objects", "0", "--out", "{out}"], "--objects: 0 must be at least 1"),
    (["train", "featnet", "--epochs", "-1", "--out", "{out}"], "--epochs: -1 must be at least 1"),
    (["train", "featnet", "--views", "four", "--out", "{out}"], "--views: 'four' is not an integer"),
    (["train", "featnet", "--threads", "0", "--out", "{out}"], "--threads: 0 must be at least 1"),
    (["train", "ar", "--tokens", "{root}/missing.npz", "--data", "{chunk}", "--out", "{out}"], "no such token"),
    (["train", "ar", "--tokens", "{root}/truncated.npz", "--data", "{chunk}", "--out", "{out}"],
     "not a readable .npz token file"),
    (["train", "ar", "--tokens", "{root}/t.npz", "--data", "{chunk}", "--steps", "0", "--out", "{out}"],
     "--steps: 0 must be at least 1"),
    (["train", "ar", "--tokens", "{root}/t.npz", "--data", "{chunk}", "--batch-size", "0", "--out", "{out}"],
     "--batch-size: 0 must be at least 1"),
    (["train", "ar", "--tokens", "{root}/t.npz", "--data", "{chunk}", "--lr", "nan", "--out", "{out}"],
     "--lr: nan must be a finite number > 0"),
    (["train", "ar", "--tokens", "{root}/t.npz", "--data", "{chunk}", "--lr", "0", "--out", "{out}"],
     "--lr: 0 must be a finite number > 0"),
    (["train", "ar", "--tokens", "{root}/t.npz", "--data", "{chunk}", "--weight-decay", "-0.1", "--out", "{out}"],
     "--weight-decay: -0.1 must be a finite number >= 0"),
    (["train", "ar", "--tokens", "{root}/t.npz", "--data", "{chunk}", "--width", "0", "--out", "{out}"],
     "--width: 0 must be at least 1"),
    (["train", "ar", "--tokens", "{root}/t.npz", "--data", "{chunk}", "--ckpt-every", "0", "--out", "{out}"],
     "--ckpt-every: 0 must be at least 1"),
    (["train", "ar", "--tokens", "{root}/t.npz", "--data", "{chunk}", "--cond", "audio", "--out", "{out}"],
     "--cond: invalid choice"),
    (["train", "ar", "--tokens", "{root}/t.npz", "--out", "{out}"], "required: --data"),
    (["train", "ar", "--tokens", "{root}/good_tokens.npz", "--data", "{root}/missing_dir", "--out", "{out}"],
     "--data missing_dir: no such folder"),
    (["train", "ar", "--tokens", "{root}/good_tokens.npz", "--data", "{chunk}", "--init", "{root}/missing_gen",
      "--steps", "1", "--out", "{out}"], "missing_gen has no config.json: not a generator checkpoint"),
    # --- generate
    (["generate", "--text", "a chair", "--cfg", "nan", "--out", "{out}.glb"], "--cfg: nan must be a finite number"),
    (["generate", "--text", "a chair", "--cfg", "-1", "--out", "{out}.glb"], "--cfg: -1 must be a finite number"),
    (["generate", "--text", "a chair", "--cfg", "inf", "--out", "{out}.glb"], "--cfg: inf must be a finite number"),
    (["generate", "--text", "a chair", "--top-p", "0", "--out", "{out}.glb"], "--top-p: 0 must be a finite number in"),
    (["generate", "--text", "a chair", "--top-p", "1.5", "--out", "{out}.glb"], "--top-p: 1.5 must be"),
    (["generate", "--text", "a chair", "--top-p", "nan", "--out", "{out}.glb"], "--top-p: nan must be"),
    (["generate", "--text", "a chair", "--top-k", "-1", "--out", "{out}.glb"], "--top-k: -1 must be at least 0"),
    (["generate", "--text", "", "--out", "{out}.glb"], "--text: the prompt is empty"),
    (["generate", "--text", "   ", "--out", "{out}.glb"], "--text: the prompt is empty"),
    (["generate", "--out", "{out}.glb"], "give --text PROMPT or --image FILE"),
    (["generate", "--text", "a chair", "--flexicubes", "{root}/empty_dir", "--out", "{out}.glb"],
     "--flexicubes DIR goes with --mesher flexicubes"),
    (["generate", "--text", "a chair", "--mesher", "flexicubes", "--flexicubes", "{root}/empty_dir", "--out",
      "{out}.glb"], "has no config.json: is it a SAR3DFlexiCubes checkpoint?"),
    (["generate", "--text", "a chair", "--image", "{root}/junk.png", "--out", "{out}.glb"], "one of the two"),
    (["generate", "--image", "{root}/missing.png", "--out", "{out}.glb"], "no such image"),
    (["generate", "--image", "{root}/junk.png", "--out", "{out}.glb"], "junk.png is not a readable PNG/JPEG"),
    (["generate", "--image", "{root}/grey.png", "--out", "{out}.glb"], "grey.png has PIL mode L, not RGB or RGBA"),
    (["generate", "--image", "{root}/cmyk.jpg", "--out", "{out}.glb"], "cmyk.jpg has PIL mode CMYK, not RGB"),
    (["generate", "--image", "{root}/speck.png", "--out", "{out}.glb"], "speck.png is 8 x 8 pixels: give a view"),
    (["generate", "--image", "{root}/strip.png", "--out", "{out}.glb"], "strip.png is 300 x 40 pixels: give a view"),
    (["generate", "--text", "a red chair with four legs " * 8, "--out", "{out}.glb"],
     "tokens long and the text encoder reads at most 32"),
    (["generate", "--text", "a chair", "--out", "{out}.png"], "write a mesh file"),
    (["generate", "--text", "a chair", "--mesh-resolution", "1", "--out", "{out}.glb"], "--mesh-resolution: 1 must"),
    (["generate", "--text", "a chair", "--threads", "0", "--out", "{out}.glb"], "--threads: 0 must be at least 1"),
    (["generate", "--text", "a chair", "--checkpoint", "{root}/missing_ckpt", "--out", "{out}.glb"], "missing_ckpt"),
    # --- bench sampling
    (["bench"], "required"),
    (["bench", "sampling", "--repeats", "0", "--json", "{out}.json"], "--repeats: 0 must be at least 1"),
    (["bench", "metrics", "--num", "1"], "--num: 1 must be at least 2"),
    (["bench", "sampling", "--cfg", "nan", "--json", "{out}.json"], "--cfg: nan must be a finite number >= 0"),
    (["bench", "sampling", "--prompt", "", "--json", "{out}.json"], "--prompt: the prompt is empty"),
    (["bench", "sampling", "--threads", "-2", "--json", "{out}.json"], "--threads: -2 must be at least 1"),
    (["bench", "sampling", "--checkpoint", "{root}/missing_ckpt", "--json", "{out}.json"], "missing_ckpt"),
    # --- tutorials
    (["tutorials", "--only", "no_such_notebook", "--out", "{out}"], "no tutorials match 'no_such_notebook'"),
]


def run_main(argv, capsys):
    """``(exit status, stdout, stderr)`` of ``sar3d ARGV`` run in-process."""
    status = main(argv)  # returns argparse's status too, rather than exiting
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def row_id(args) -> str:
    words = " ".join(a for a in args if not a.startswith("{out}")).replace("--out", "").replace("--json", "")
    return " ".join(words.replace("{root}/", "").replace("{", "").replace("}", "").split()) or "(nothing)"


@pytest.mark.parametrize("args, message", ROWS, ids=[row_id(a) for a, _ in ROWS])
def test_bad_input_gives_one_line_and_no_output(args, message, bad, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.format(root=bad, out=out, chunk=CHUNK, mug=MUG, repo=REPO_ROOT) for a in args]
    status, _, err = run_main(argv, capsys)
    lines = err.strip().splitlines()
    assert status == 2, f"status {status} for: sar3d {' '.join(argv)}"
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("sar3d") and ": error: " in lines[0], lines[0]
    assert message in lines[0].replace(str(bad) + "/", ""), lines[0]
    assert not list(tmp_path.glob("out*")), "a bad command wrote its output"


def test_the_installed_command_exits_with_status_2_and_one_line(tmp_path):
    """The same through ``python -m sar3d_core.cli`` (argparse and the command's own checks)."""
    for args in (["data", "build", "--count", "-5", "--out", tmp_path / "ds"],
                 ["decode", tmp_path / "bad.npz", "--out", tmp_path / "x.png"]):
        (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 broken")
        result = sar3d(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert not (tmp_path / "ds").exists() and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("command", [["render"], ["encode"], ["data", "check"]])
def test_help_documents_the_up_axis(command, capsys):
    from sar3d_core.cli import build_parser

    status, out, _ = run_main(command + ["--help"], capsys)
    assert status == 0 and "--up {z,y}" in out
    assert "z (default" in " ".join(out.split()) and "glTF/GLB files are +Y up" in " ".join(out.split())
    args = build_parser().parse_args(command + ["proc:1"] + (["--out", "x"] if command[0] != "data" else []))
    assert args.up == "z"


def test_index_json_check_names_the_file(tmp_path):
    from sar3d_core.data import read_index

    (tmp_path / "index.json").write_text(json.dumps({"objects": [{"folder": "000001"}]}))
    with pytest.raises(ValueError, match="index.json is not a data set index"):
        read_index(tmp_path / "index.json")
