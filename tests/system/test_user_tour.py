"""The README tour, as a user types it: put, get, revise, get by file_id and by version, log,
deploy, call — through the CLI against real nodes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.support.nodes import NodeCluster, run_cli

MODULE = '''
from taskworker import TaskWorker

worker = TaskWorker("demo")

@worker.function("hello")
def hello(name):
    return f"Hello, {name}!"
'''


async def cli(*args: str, api: str) -> str:
    out = await asyncio.to_thread(run_cli, *args, api=api)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


async def test_cli_tour(tmp_path: Path) -> None:
    v1, v2 = tmp_path / "v1.txt", tmp_path / "v2.txt"
    v1.write_text("hello mesh\n")
    v2.write_text("hello v2\n")
    (tmp_path / "fns.py").write_text(MODULE)
    async with NodeCluster(tmp_path, 4) as cluster:
        api, other = cluster.nodes[0].api, cluster.nodes[2].api
        pushed = json.loads(await cli("put", str(v1), "--json", api=api))
        cid, fid = pushed["cid"], pushed["file_id"]
        assert await cli("get", cid, api=api) == "hello mesh\n"
        # keyrings are per node: another node's default user is not the owner
        denied = await asyncio.to_thread(run_cli, "get", cid, api=other)
        assert denied.returncode == 1 and b"PERMISSION_DENIED" in denied.stderr
        public = json.loads(await cli("put", str(v2), "--public", "--json", api=api))
        assert await cli("get", public["cid"], api=other) == "hello v2\n"
        await cli("revise", fid, str(v2), api=api)
        # the streaming Get the CLI uses follows the file's head, at any node
        assert await cli("get", fid, api=api) == "hello v2\n"
        log = json.loads(await cli("log", fid, "--json", api=api))
        first = next(v["version"] for v in log["versions"] if v["cid"] == cid)
        assert await cli("get", fid, "--version", first, api=api) == "hello mesh\n"
        out_file = tmp_path / "copy.txt"
        await cli("get", fid, "-o", str(out_file), api=api)
        assert out_file.read_text() == "hello v2\n"
        await cli("deploy", str(tmp_path / "fns.py"), api=api)
        for _ in range(100):                       # the provider record has to propagate
            res = await asyncio.to_thread(run_cli, "call", "hello", "--args", '["world"]',
                                          "--json", api=other)
            if res.returncode == 0:
                break
            await asyncio.sleep(0.2)
        answer = json.loads(res.stdout)
        assert answer["result"] == "Hello, world!"
        # the node that ran it reports call latency in its status (the monitor's p99 column)
        for node in cluster.nodes:
            status = json.loads(await cli("status", "--json", api=node.api))
            if status["node_id"] == answer["node_id"]:
                assert status["services"]["compute"]["p99_ms"] > 0
                break
        else:
            raise AssertionError("no node reported running the call")
        missing = await asyncio.to_thread(run_cli, "get", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
                                          "-o", str(tmp_path / "nothing"), api=api)
        assert missing.returncode == 1 and not (tmp_path / "nothing").exists()
        assert missing.stderr.count(b"\n") == 1 and b"Traceback" not in missing.stderr
