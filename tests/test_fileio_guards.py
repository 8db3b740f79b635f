"""The shared write and read guards (fileio, lock, safe_read): outputs never land on an input or on
a file of another kind, temp names fit the file system, a dead writer's temp goes and a live one's
stays, a full disk is one line with the old file intact, locks survive odd contents, and every
read is bounded before it starts."""
import errno
import os
import subprocess
import sys
import zipfile

import pytest
from PIL import Image

from caption.errors import DataError, OutputError
from caption.fileio import atomic_write, output_path, sniff
from caption.lock import run_lock
from caption.safe_read import clip, read_bytes, read_json
from caption.viz.save import figure_format, save_figure

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")


def test_an_output_that_is_an_input_is_refused_through_links_and_hard_links(tmp_path):
    image = tmp_path / "in.png"
    Image.new("RGB", (4, 4)).save(image)
    (tmp_path / "soft.png").symlink_to(image)
    os.link(image, tmp_path / "hard.png")
    for out in (image, tmp_path / "soft.png", tmp_path / "hard.png"):
        with pytest.raises(OutputError, match=f"is also this command's input {image}; refusing"):
            output_path(out, "figure", inputs=[image])
    assert output_path(tmp_path / "new.png", "figure", inputs=[image]) == tmp_path / "new.png"


def test_a_file_of_another_kind_is_never_written_over_and_stays_byte_identical(tmp_path):
    ckpt, data, figure = tmp_path / "m.pt", tmp_path / "captions.json", tmp_path / "f.png"
    with zipfile.ZipFile(ckpt, "w") as z:                      # torch.save writes a zip
        z.writestr("archive/data.pkl", b"x")
    data.write_text('{"images": [], "annotations": []}')
    Image.new("RGB", (4, 4)).save(figure)
    before = {p: p.read_bytes() for p in (ckpt, data, figure)}
    cases = [(ckpt, "results", "holds a checkpoint, not a JSON list"),
             (data, "results", "holds a JSON object \\(a data set or manifest\\), not a JSON list"),
             (data, "checkpoint", "holds a JSON object .*, not a checkpoint"),
             (figure, "results", "holds an image, not a JSON list"),
             (figure, "checkpoint", "holds an image, not a checkpoint")]
    for path, kind, message in cases:
        with pytest.raises(OutputError, match=message):
            with atomic_write(path, kind) as tmp:
                open(tmp, "wb").write(b"[]")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.json", "f.png", "m.pt"]   # no temp left


def test_an_empty_file_or_one_of_the_same_kind_is_replaced(tmp_path):
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "old.json").write_text('[{"image_id": 1, "caption": "a"}]')
    for name in ("empty.json", "old.json"):
        with atomic_write(tmp_path / name, "results") as tmp:
            open(tmp, "w").write("[]")
        assert (tmp_path / name).read_text() == "[]"


@pytest.mark.parametrize("head, kind", [(b"PK\x03\x04rest", "checkpoint"), (b"\x89PNG\r\n", "figure"),
                                        (b"%PDF-1.4", "figure"), (b"\xff\xd8\xff\xe0", "figure"),
                                        (b"  [1, 2]", "results"), (b'{"a": 1}', "data set"),
                                        (b'{"a": 1}\n{"b": 2}\n', "jsonl"), (b'{"images": []}\n', "data set"), (b"march 1, 2000 _2000-03-01", "text"),
                                        (b"", None)])
def test_sniff_tells_the_kinds_apart(tmp_path, head, kind):
    (tmp_path / "f").write_bytes(head)
    assert sniff(tmp_path / "f") == kind


@pytest.mark.parametrize("path, root", [("/proc/self/fd/1", "/proc"), ("/sys/kernel/x", "/sys"),
                                        ("/dev/stdout", "/dev"), ("/dev/null", "/dev")])
def test_kernel_and_device_trees_are_never_outputs(path, root):
    with pytest.raises(OutputError, match=f"is under {root}; write to a file on disk instead"):
        output_path(path, "figure")


def test_a_name_longer_than_the_file_system_takes_is_one_line(tmp_path):
    with pytest.raises(OutputError, match="the file name is 256 bytes; file systems take at most 255"):
        output_path(tmp_path / ("x" * 253 + ".pt"))


def test_a_250_byte_name_is_written_through_a_temp_name_that_fits(tmp_path):
    out = tmp_path / ("é" * 123 + "abcd")                     # 250 bytes in UTF-8
    assert len(out.name.encode()) == 250
    for _ in range(2):                                         # the second write finds the first's name taken
        with atomic_write(out) as tmp:
            assert len(os.path.basename(tmp).encode()) <= 255
            open(tmp, "wb").write(b"data")
    assert out.read_bytes() == b"data" and sorted(tmp_path.iterdir()) == [out]


def test_a_second_writer_leaves_the_first_writers_temp_alone(tmp_path):
    out = tmp_path / "r.json"
    with atomic_write(out) as first:
        open(first, "w").write("[1]")
        with atomic_write(out) as second:                    # same process: its writer is alive
            open(second, "w").write("[2]")
        assert os.path.exists(first)
    assert out.read_text() == "[1]" and sorted(tmp_path.iterdir()) == [out]


def test_a_full_disk_is_one_line_and_the_previous_file_stays(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    out.write_text("[0]")

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match=r"r\.json: cannot write it \(No space left on device\); the previous"):
        with atomic_write(out, "results") as tmp:
            open(tmp, "w").write("[1]")
    assert out.read_text() == "[0]" and sorted(tmp_path.iterdir()) == [out]


def test_figures_are_written_in_the_format_their_suffix_names(tmp_path):
    image = Image.new("RGB", (8, 8), (200, 10, 10))
    for name, fmt in (("f.png", "PNG"), ("f.jpg", "JPEG"), ("f.JPEG", "JPEG"), ("f.pdf", None),
                      ("f.webp", "WEBP"), ("f", "PNG")):
        save_figure(image, tmp_path / name)
        if fmt is None:
            assert (tmp_path / name).read_bytes().startswith(b"%PDF")
        else:
            with Image.open(tmp_path / name) as im:
                assert im.format == fmt
    with pytest.raises(OutputError, match=r"f\.bmp: figures are written as .*\.bmp is none of these"):
        figure_format(tmp_path / "f.bmp")


@pytest.mark.parametrize("content", [b"1", b"999999999999999999999999999999", b"\x00\xffgarbage",
                                     b"12 boot-of-another-machine", b""])
def test_a_lock_left_with_any_contents_and_no_holder_is_taken_over(tmp_path, content):
    (tmp_path / "m.pt.lock").write_bytes(content)              # PID 1 lives forever; flock says nobody holds it
    with run_lock(tmp_path / "m.pt") as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not lock.exists()


@pytest.mark.parametrize("make, what", [(os.mkfifo, "a FIFO"), (os.mkdir, "a directory")])
def test_a_lock_that_is_not_a_file_is_one_line(tmp_path, make, what):
    make(tmp_path / "m.pt.lock")
    with pytest.raises(OutputError, match=f"m\\.pt\\.lock: is {what}, not a lock file; remove it"):
        with run_lock(tmp_path / "m.pt"):
            pass


def test_a_lock_held_by_another_process_is_refused_with_its_id(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom caption.lock import run_lock\n"
                               "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(30)",
                               str(tmp_path / "m.pt")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(OutputError, match=f"another run \\(process {holder.pid}\\) is writing it"):
            with run_lock(tmp_path / "m.pt"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path / "m.pt"):                           # the kernel let go when it died
        pass


def test_reads_are_bounded_and_never_block(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "big").write_bytes(b"x" * 2000)
    for path, message in (("/dev/zero", "is a device, not a regular file"),
                          (tmp_path / "fifo", "is a FIFO, not a regular file"),
                          (tmp_path / "dir", "is a directory, not a regular file"),
                          (tmp_path / "none", "no such results file"),
                          (tmp_path / "big", "2,000 bytes, more than the 1,000 bytes a results file may have")):
        with pytest.raises(DataError, match=message):
            read_bytes(path, "results file", 1000)


@pytest.mark.parametrize("text, message", [("[" * 100_000 + "]" * 100_000, "nested too deeply"),
                                           ('[{"image_id": Infinity}]', "Infinity is not a JSON number"),
                                           ('[NaN]', "NaN is not a JSON number"),
                                           ('["\\ud800"]', "lone surrogate"), ("[1,", "not JSON")])
def test_json_is_read_strictly(tmp_path, text, message):
    (tmp_path / "r.json").write_text(text)
    with pytest.raises(DataError, match=message):
        read_json(tmp_path / "r.json", "results file")


def test_a_surrogate_pair_is_text(tmp_path):
    (tmp_path / "r.json").write_text('["\\ud83d\\ude00"]')
    assert read_json(tmp_path / "r.json", "results file") == ["\U0001F600"]


def test_clip_keeps_messages_one_short_line():
    assert clip("abc") == "abc"
    assert clip("a\nb") == "a\\nb"
    long = clip("x" * 1_000_000, 20)
    assert long == "x" * 20 + "... (1,000,000 characters)"


def test_an_empty_path_is_named_as_such():
    from caption.fileio import regular_file
    with pytest.raises(DataError, match="^an empty path is no data file$"):
        regular_file("", "data file", DataError)
    with pytest.raises(OutputError, match="^an empty path is no output file$"):
        output_path("")


def test_a_temp_whose_writer_holds_its_flock_is_kept_even_when_its_pid_means_nothing_here(tmp_path):
    """A writer in another PID namespace (a container sharing the folder): its pid runs nothing here,
    but it holds the flock on its temp, so the temp is still being written."""
    foreign = tmp_path / ".out.bin.999999999-abc.tmp"
    foreign.write_bytes(b"being written elsewhere")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDONLY)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
                               "print('held', flush=True)\ntime.sleep(30)", str(foreign)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with atomic_write(tmp_path / "out.bin") as tmp:
            open(tmp, "wb").write(b"new")
        assert foreign.read_bytes() == b"being written elsewhere"
    finally:
        holder.kill()
        holder.wait()
    with atomic_write(tmp_path / "out.bin") as tmp:             # its writer gone: now it is stale
        open(tmp, "wb").write(b"newer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_the_cleanup_of_one_name_never_takes_the_temps_of_a_longer_one(tmp_path):
    other = tmp_path / ".m.pt.999999999-abc.tmp"                # a dead write of m.pt, not of m
    other.write_bytes(b"x")
    with atomic_write(tmp_path / "m") as tmp:
        open(tmp, "wb").write(b"new")
    assert other.exists()


def test_a_lock_on_a_full_disk_or_a_file_system_without_flock_is_one_line(tmp_path, monkeypatch):
    import fcntl

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "pwrite", full)
    with run_lock(tmp_path / "m.pt"):                           # the id is only for messages: the run goes on
        pass
    monkeypatch.undo()

    def no_flock(fd, how):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, "flock", no_flock)
    with pytest.raises(OutputError, match=r"m\.pt\.lock: cannot lock it on this file system \(No locks available\)"):
        with run_lock(tmp_path / "m.pt"):
            pass
