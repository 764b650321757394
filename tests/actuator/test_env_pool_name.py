"""env-swap with ``env_mode = "pool_name"``: guild-operators' env file, its POOL_NAME line toggled in place.

The files are the User Variables sections of guild's real ``scripts/env`` (tests/actuator/fixtures,
each naming its source in its first line), followed by a stand-in for the code section.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bpfailover.actuator.methods import ApplyError, build_method, pool_name
from bpfailover.settings import ActuatorSettings, ConfigError
from tests.actuator.helpers import NodeFiles

FIXTURES = Path(__file__).parent / "fixtures"
GUILD_2025 = FIXTURES / "guild_env_2025-11.sh"
GUILD_2020 = FIXTURES / "guild_env_2020.sh"
# What guild's code section does with the name (env, after "Do NOT modify"): an unset name
# becomes CHANGE_ME, a folder with no keys, so cnode.sh starts the node without key flags.
CODE = (
    '\n[[ -z ${POOL_NAME} ]] && POOL_NAME="CHANGE_ME"\n'
    'POOL_DIR="/opt/cardano/cnode/priv/pool/${POOL_NAME}"\n'
)


def guild_env(section: Path = GUILD_2025) -> bytes:
    return section.read_bytes() + CODE.encode()


def bash_pool_name(env_file: Path) -> str:
    """What bash makes of the file: the POOL_NAME guild's cnode.sh would use."""
    out = subprocess.run(
        ["bash", "-c", 'source "$1" >/dev/null 2>&1; printf %s "$POOL_NAME"', "_", str(env_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def changed_lines(before: bytes, after: bytes) -> list[tuple[str, str]]:
    a, b = before.decode().splitlines(), after.decode().splitlines()
    assert len(a) == len(b), "a line was added or removed"
    return [(x, y) for x, y in zip(a, b, strict=True) if x != y]


def settings(files: NodeFiles, **extra: object) -> ActuatorSettings:
    values: dict[str, object] = {
        "env_file": files.env_file,
        "env_mode": "pool_name",
        "pool_name": "pool1",
        "restart_command": str(files.restart.script),
        "stop_command": str(files.stop.script),
        "state_dir": files.state_dir,
        "apply_timeout": 5.0,
        "apply_retries": 2,
        "apply_retry_wait": 0.05,
    }
    values.update(extra)
    return ActuatorSettings(**values)  # type: ignore[arg-type]


# --- the pure text functions ------------------------------------------------------------------


@pytest.mark.parametrize("section", [GUILD_2025, GUILD_2020], ids=["2025", "2020"])
def test_guilds_default_file_is_relay_and_round_trips_byte_for_byte(section: Path) -> None:
    original = guild_env(section).decode()
    assert pool_name.detect(original, "pool1") == "relay"
    producer = pool_name.set_role(original, "producer", "pool1")
    assert pool_name.detect(producer, "pool1") == "producer"
    [(old, new)] = changed_lines(original.encode(), producer.encode())
    assert old.startswith('#POOL_NAME=""') and new.startswith('POOL_NAME="pool1"')
    # guild's comment stays where it was, in the same column
    assert new.index("# Set the pool's name") == old.index("# Set the pool's name")
    assert pool_name.set_role(producer, "relay", "pool1") == original


def test_detect_reads_the_line_as_bash_does() -> None:
    assert pool_name.detect('#POOL_NAME="pool1"\n', "pool1") == "relay"  # commented: unset
    assert pool_name.detect('POOL_NAME=""\n', "pool1") == "relay"
    assert pool_name.detect("POOL_NAME=pool1 # ours\n", "pool1") == "producer"
    assert pool_name.detect("export POOL_NAME='pool1'\n", "pool1") == "producer"
    assert pool_name.detect('POOL_NAME="pool1"\nPOOL_NAME=""\n', "pool1") == "relay"  # the last one wins
    assert pool_name.detect('POOL_NAME="other"\n', "pool1") == "other"
    assert pool_name.detect("CNODE_PORT=6000\n", "pool1") == "missing"
    # guild's code section assigns it too, but not at the start of a line: not a setting
    assert pool_name.detect(CODE, "pool1") == "missing"


def test_relay_comments_out_every_active_assignment_and_producer_sets_the_last() -> None:
    text = 'POOL_NAME="a"\r\nX=1\r\n  POOL_NAME="pool1"   # mine\r\n'
    relay = pool_name.set_role(text, "relay", "pool1")
    assert relay == '#POOL_NAME=""\r\nX=1\r\n  #POOL_NAME=""       # mine\r\n'  # CRLF kept
    assert pool_name.detect(relay, "pool1") == "relay"
    producer = pool_name.set_role('POOL_NAME="a"\nPOOL_NAME="b"\n', "producer", "pool1")
    assert producer == 'POOL_NAME="a"\nPOOL_NAME="pool1"\n'
    with pytest.raises(pool_name.NoPoolNameLine):
        pool_name.set_role("CNODE_PORT=6000\n", "producer", "pool1")


# --- the method on real files -----------------------------------------------------------------


def test_promotion_and_demotion_toggle_only_the_line_atomically(node_files: NodeFiles) -> None:
    env = node_files.env_file
    env.write_bytes(guild_env())
    env.chmod(0o640)
    original = env.read_bytes()
    method = build_method(settings(node_files))
    assert method.detect_role() == "relay"
    inode = env.stat().st_ino

    method.apply("producer")
    assert method.detect_role() == "producer"
    assert bash_pool_name(env) == "pool1"
    assert len(changed_lines(original, env.read_bytes())) == 1
    assert env.stat().st_ino != inode  # a new file renamed over the old one, never edited in place
    assert env.stat().st_mode & 0o777 == 0o640
    assert len(node_files.restart.calls()) == 1
    assert sorted(p.name for p in env.parent.iterdir() if p.name.startswith(".env.")) == []

    method.apply("relay")
    assert method.detect_role() == "relay"
    assert bash_pool_name(env) == "CHANGE_ME"  # guild's code: no keys, cnode.sh starts a relay
    assert env.read_bytes() == original
    assert len(node_files.restart.calls()) == 2


def test_the_role_survives_guilds_updater_rewriting_the_file(node_files: NodeFiles) -> None:
    """guild's checkUpdate keeps the User Variables section, appends variables that are new in
    GitHub's copy, replaces the code below, and moves the result over ``env`` (``mv -f``)."""
    env = node_files.env_file
    env.write_bytes(guild_env(GUILD_2020))
    method = build_method(settings(node_files))
    method.apply("producer")
    updated = guild_updater(env.read_bytes(), GUILD_2025.read_bytes(), b"# the new code section\n")
    tmp = env.with_name("env.tmp")
    tmp.write_bytes(updated)
    os.replace(tmp, env)

    assert method.detect_role() == "producer"  # a whole-file variant would read "unknown" here
    assert bash_pool_name(env) == "pool1"
    method.apply("relay")
    after = env.read_bytes()
    [(old, new)] = changed_lines(updated, after)  # the update itself is kept, not reverted
    assert old.startswith('POOL_NAME="pool1"') and new.startswith('#POOL_NAME=""')
    assert b"#MITHRIL_DOWNLOAD=" in after and b"# the new code section" in after
    assert method.detect_role() == "relay"


def guild_updater(current: bytes, github_section: bytes, github_code: bytes) -> bytes:
    """A model of guild's checkUpdate/checkUserVariables on ``env`` (not its code): the user section
    up to its last two lines, plus each variable of GitHub's section it lacks, then those two lines,
    then GitHub's code section."""
    text = current.decode()
    static = text[: text.index("# Do NOT modify")].splitlines()
    head, tail = static[:-2], static[-2:]
    names = {line.lstrip("#").strip().split("=", 1)[0] for line in head if "=" in line}
    for line in github_section.decode().splitlines():
        stripped = line.lstrip("#").strip()
        name = stripped.split("=", 1)[0]
        if "=" in stripped and name.isidentifier() and name not in names:
            head.append(line)
    return ("\n".join(head + tail) + "\n# Do NOT modify code below           #\n").encode() + github_code


def test_a_file_without_the_line_fails_the_promotion_and_stops_the_node_on_demotion(
    node_files: NodeFiles,
) -> None:
    env = node_files.env_file
    env.write_bytes(b"CNODE_PORT=6000\n")
    method = build_method(settings(node_files))
    assert method.detect_role() == "unknown"
    with pytest.raises(ApplyError, match="no POOL_NAME= line"):
        method.apply("producer")
    assert node_files.restart.calls() == []
    with pytest.raises(ApplyError, match="stopped with stop_command") as failed:
        method.apply("relay")
    assert failed.value.applied == "relay"
    assert len(node_files.stop.calls()) == 1
    assert env.read_bytes() == b"CNODE_PORT=6000\n"


def test_another_pools_name_reads_unknown(node_files: NodeFiles) -> None:
    node_files.env_file.write_bytes(b'POOL_NAME="otherpool"\n')
    assert build_method(settings(node_files)).detect_role() == "unknown"


def test_pool_name_mode_needs_no_variants_but_a_plain_name(node_files: NodeFiles) -> None:
    build_method(settings(node_files, producer_env=None, relay_env=None))
    with pytest.raises(ConfigError, match=r"actuator\.pool_name"):
        build_method(settings(node_files, pool_name=None))
    with pytest.raises(ConfigError, match="folder name"):
        build_method(settings(node_files, pool_name='x"; rm -rf /'))
    assert "POOL_NAME=\"pool1\"" in build_method(settings(node_files)).describe("producer")
