"""The docstring examples of the public modules run and hold."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["rtdecoder.protocol", "rtdecoder.windows", "rtdecoder.config",
                                  "rtdecoder.decoders"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
