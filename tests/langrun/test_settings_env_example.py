""".env.example lists every setting the code reads, with its default and a line saying what it does, and nothing else."""

from langrun.config import LANGFLOW_ALIASES
from tests.env_names import env_example, settings_defaults, settings_read


def test_every_setting_read_is_in_env_example_and_every_listed_one_is_read():
    listed = set(env_example())
    read = settings_read()
    assert read - listed == set(), "read by the code but missing from .env.example"
    assert listed - read - set(LANGFLOW_ALIASES) == set(), "in .env.example but read nowhere"
    assert set(LANGFLOW_ALIASES) <= listed, "Langflow's names are listed too"


def test_each_setting_has_a_one_line_explanation_above_it():
    for name, (_, above) in env_example().items():
        if name.startswith("LANGFLOW_"):
            continue
        assert above.startswith("# ") and not above[2:].split("=")[0].isupper() and len(above) > 12, name


def test_the_defaults_written_are_the_codes():
    example = env_example()
    for name, default in settings_defaults().items():
        written = example[name][0]
        if isinstance(default, bool):
            assert written == str(default).lower(), name
        elif isinstance(default, int | float):
            assert float(written) == default, name
        elif isinstance(default, list):
            assert written == ",".join(default), name
        else:
            assert written == default, name


def test_langflow_aliases_name_their_langrun_setting():
    example = env_example()
    for langflow_name, name in LANGFLOW_ALIASES.items():
        assert example[langflow_name][0].startswith(f" -> {name}"), langflow_name
