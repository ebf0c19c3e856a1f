"""The unit tests' helper modules get pytest's assertion messages too (only test modules and
conftest files are rewritten unless named here, before anything imports them)."""

import pytest

pytest.register_assert_rewrite("tests.unit.deploy_files", "tests.unit.protos_triton",
                               "tests.unit.translator_shipped", "tests.unit.translator_toy")
