"""Fuzz the prompt-file parser: any bytes give prompts or one InputError, never another exception."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdguard.audit.prompt_suites import read_prompt_file
from sdguard.core.errors import InputError

# bytes with a bias towards the parser's own characters: tabs, newlines, '#', a BOM, UTF-8 pieces
PIECES = st.sampled_from([b"\t", b"\n", b"\r\n", b"\r", b"#", b" ", b"\xef\xbb\xbf", b"keywords", b"a red circle",
                          "\u00e9\U0001f600".encode(), b"\xff", b"\xc3", b"\x00"])
CONTENT = st.one_of(st.binary(max_size=400), st.lists(st.one_of(PIECES, st.binary(max_size=8)), max_size=40).map(b"".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONTENT)
def test_random_bytes_give_prompts_or_an_input_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prompts.txt"
        path.write_bytes(data)
        try:
            specs = read_prompt_file(path)
        except InputError as exc:
            assert "--prompts" in str(exc) and str(path) in str(exc)
            return
    assert specs
    for s in specs:
        assert s.prompt and s.prompt == s.prompt.strip() and s.kind and "\t" not in s.kind
        assert "\n" not in s.prompt and "\r" not in s.prompt
