"""``pullweights run``'s command line, through the real entry point: options anywhere, model
words that name nothing are errors (never prompts), numeric options checked, the context
checked before any weight is pulled, sampling defaults printed with their seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullweights.cli import main
from pullweights.cli.model_args import DEFAULT_MODEL
from pullweights.cli.model_words import split_model_and_prompt
from pullweights.cli.parsing import UsageError
from tests.reference import write_tiny_model

from .runner import assert_one_line_error, cli

QUIET = ("--no-cache", "--quiet", "--greedy", "--max-tokens", "4")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.gguf"
    return write_tiny_model(path, "qwen2", quant="Q8_0")  # training context 256


def test_options_may_stand_anywhere(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = str(tiny)
    outputs = set()
    for form in [
        ("run", m, "--chat", "Paris is", *QUIET),
        ("run", "--chat", m, "Paris is", *QUIET),
    ]:
        done = cli(*form)
        assert done.returncode == 0, (form, done.stderr)
        assert done.stdout.strip(), form
        outputs.add(done.stdout)
    for form in [
        ("run", *QUIET, m, "--chat", "Paris is"),
        ("run", "--chat", "-m", m, "Paris is", *QUIET),
        ("run", "-p", "Paris is", "--chat", m, *QUIET),
    ]:
        code, out, err = in_process(capsys, *form)
        assert code == 0, (form, err)
        outputs.add(out)
    assert len(outputs) == 1, outputs  # every form ran the same model on the same prompt


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``pullweights.cli.main(args)`` in this process (argparse errors included)."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_word_that_names_no_model_is_an_error_listing_the_installed_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    done = cli("run", "qwen2.5", "hello", "--no-cache")  # a mistyped model name
    assert done.returncode == 2
    assert done.stdout == ""
    assert_one_line_error(done.stderr, "'qwen2.5'", "not a file, a URL or an installed model")
    assert "installed: " in done.stderr or "not installed: " in done.stderr
    for name in ("gemma3-270m", "qwen2.5-coder-0.5b"):
        assert name in done.stderr
    # One word: not a model, and without a space not a prompt either; a missing file.
    for words in (["Hello"], ["missing.gguf", "Once upon a time"]):
        code, out, err = in_process(capsys, "run", *words, "--no-cache")
        assert code == 2 and out == ""
        assert_one_line_error(err, repr(words[0]), "not a file, a URL or an installed model")


def test_a_model_without_prompt_is_a_chat_not_a_prompt(tiny: Path) -> None:
    # The case (run --chat MODEL) used to run gemma3 with the model's name as the
    # prompt; a model without a prompt is now a chat with that model (stdin: one message).
    done = cli(
        "run", "--chat", str(tiny), "--no-cache", "--greedy", "--max-tokens", "3",
        input="Paris is\n", stdin=None,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "model: gemma3-270m" not in done.stderr
    assert done.stdout.strip()  # the answer to the one message
    nothing = cli("run", "--no-cache")
    assert nothing.returncode == 2
    assert_one_line_error(nothing.stderr, "no PROMPT", "a MODEL to chat with")


def test_extra_words_are_an_error(tiny: Path) -> None:
    done = cli("run", str(tiny), "Paris", "is", "--no-cache")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "one PROMPT, quoted")


def test_how_words_split() -> None:
    """The rule ``run --help`` and the README state, for the default model too."""
    spaced = split_model_and_prompt(["The capital of France is"])
    assert (spaced.model, spaced.prompt) == (DEFAULT_MODEL, "The capital of France is")
    one_word = split_model_and_prompt([], prompt="Hello")
    assert (one_word.model, one_word.prompt) == (DEFAULT_MODEL, "Hello")
    named = split_model_and_prompt(["qwen2.5-coder-0.5b", "Hi"])
    assert (named.model, named.prompt) == ("qwen2.5-coder-0.5b", "Hi")
    explicit = split_model_and_prompt(["Hi there"], models=["gemma3-270m"])
    assert (explicit.model, explicit.prompt) == ("gemma3-270m", "Hi there")
    with pytest.raises(UsageError, match="'Hello' is not a file"):
        split_model_and_prompt(["Hello"])
    with pytest.raises(UsageError, match="'nope' is not a file"):
        split_model_and_prompt(["Hi there"], models=["nope"])


def test_parts_are_every_leading_path(tmp_path: Path, tiny: Path) -> None:
    data = tiny.read_bytes()
    parts = [tmp_path / "p0", tmp_path / "p1"]
    parts[0].write_bytes(data[:5000])
    parts[1].write_bytes(data[5000:])
    chosen = split_model_and_prompt([str(parts[0]), str(parts[1]), "Paris is"])
    assert chosen.model == [str(p) for p in parts] and chosen.prompt == "Paris is"
    whole = cli("run", str(tiny), "Paris is", *QUIET)
    split = cli("run", *map(str, parts), "Paris is", *QUIET)
    assert split.returncode == 0, split.stderr
    assert split.stdout == whole.stdout


def test_numeric_options_are_checked(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = cli("run", str(tiny), "Paris is", "--max-tokens", "0", "--no-cache")
    assert done.returncode == 2 and done.stdout == ""
    assert_one_line_error(done.stderr, "argument --max-tokens: must be at least 1, got 0")
    for option, value, says in [
        ("--context", "0", "argument --context: must be at least 1, got 0"),
        ("--threads", "0", "argument --threads: must be at least 1, got 0"),
        ("--top-p", "0", "argument --top-p: must be > 0 and <= 1"),
        ("--temperature", "-1", "argument --temperature: must be >= 0"),
        ("--context", "x", "argument --context: 'x' is not a whole number"),
    ]:
        code, out, err = in_process(capsys, "run", str(tiny), "Paris is", option, value)
        assert code == 2 and out == ""
        assert_one_line_error(err, says)


def test_context_above_training_is_capped_and_said(tiny: Path) -> None:
    done = cli(
        "run", str(tiny), "Paris is", "--context", "100000", "--no-cache", "--max-tokens", "2"
    )
    assert done.returncode == 0, done.stderr
    assert f"--context 100000 is more than {tiny}'s training context of 256 positions: " in (
        done.stderr
    )
    assert "using --context 256" in done.stderr
    assert "context 256;" in done.stderr  # the report


def test_a_prompt_longer_than_the_context_is_refused_before_loading(tiny: Path) -> None:
    prompt = "word " * 100  # about 200 tokens with the tiny vocabulary
    done = cli("run", str(tiny), prompt, "--context", "64", "--no-cache")
    assert done.returncode == 2 and done.stdout == ""
    assert_one_line_error(done.stderr, "the context holds 64", "give --context 256")
    # stderr is not a terminal: the load would log a "loading:" line when it began
    # pulling weights; the check came first.
    assert "pullweights: loading:" not in done.stderr
    assert "pullweights: weights:" not in done.stderr
    longer = cli("run", str(tiny), "word " * 300, "--no-cache")
    assert longer.returncode == 2
    assert_one_line_error(longer.stderr, "training context of 256 positions: shorten it")


def test_sampling_defaults_are_reproducible_and_printed(
    tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("run", str(tiny), "Paris is", "--no-cache", "--max-tokens", "12")
    first, second = cli(*args), cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert "sampling: temperature 0.7, top-p 0.9, repetition penalty 1.1, seed 0" in first.stderr
    code, _, err = in_process(capsys, *args, "--seed", "7")
    assert code == 0 and "seed 7" in err
    code, greedy, err = in_process(capsys, *args, "--greedy")
    assert code == 0 and "sampling: greedy\n" in err
    assert in_process(capsys, *args, "--greedy")[1] == greedy
    code, _, err = in_process(capsys, *args, "--greedy", "--temperature", "0.5")
    assert code == 2
    assert_one_line_error(err, "--greedy and --temperature 0.5")


def test_threads_reach_the_context(tiny: Path) -> None:
    done = cli("run", str(tiny), "Paris is", "--threads", "1", "--no-cache", "--max-tokens", "2")
    assert done.returncode == 0, done.stderr
    assert "1 intra-op threads" in done.stderr


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("pullweights 0.") and "onnxruntime" in done.stdout


@pytest.mark.model
def test_a_spaced_prompt_runs_the_default_model() -> None:
    done = cli("run", "The capital of France is", "--no-cache", "--max-tokens", "4")
    assert done.returncode == 0, done.stderr
    assert f"model: {DEFAULT_MODEL} (gemma3" in done.stderr
