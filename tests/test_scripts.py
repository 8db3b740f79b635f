"""The reproduction scripts stay runnable: every `caption` command in them parses with today's flags."""
import os
import stat
import subprocess
from pathlib import Path

import pytest

from caption.cli import build_parser

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "scripts").glob("*.sh"))
# records each command's arguments (unit separator between them, record separator after) to parse later
SHIM = "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\037' \"$a\"; done >> {log}; printf '\\036' >> {log}\n"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_every_caption_command_in_the_script_parses(script, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "commands.txt"
    for name, text in (("caption", SHIM.format(log=log)),
                       ("python", "#!/bin/sh\nexit 0\n")):      # benchmark lines are not run here
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FLICKR8K": "/data/f8k",
           "COCO": "/data/coco", "KARPATHY": "/data/dataset_coco.json", "VGG19": "/w/vgg19.pth",
           "OUT": str(tmp_path / "out")}
    r = subprocess.run(["bash", str(script), str(tmp_path / "runs")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    commands = [c.split("\037")[:-1] for c in log.read_text().split("\036")[:-1]]
    assert commands and all(c[0] in ("train", "evaluate", "features", "seq2seq", "classify") for c in commands)
    for argv in commands:
        args = build_parser().parse_args(argv)        # exits (fails the test) on an unknown flag
        assert args.command == argv[0]
