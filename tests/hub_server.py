"""A small Hugging Face Hub stand-in on 127.0.0.1 for tests (stdlib only).

It implements the routes huggingface_hub uses to create and delete a repo, validate a card, pre-upload, commit (NDJSON
with base64 file contents; a parentCommit other than the branch's head is refused with 412, as on the Hub), create and
delete a branch, resolve a revision, list a tree and download files. It does NOT cover:
LFS or Xet uploads (every file is declared "regular"), authentication and permissions (any token is accepted and
none is required), the Hub's own YAML/model-card rules (validate-yaml only checks that front matter exists), rate
limits, pull requests, or gated/private access control.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class HubState:
    def __init__(self):
        self.lock = threading.Lock()
        self.repos: dict[str, dict] = {}  # repo_id -> {"private": bool, "branches": {name: sha}, "snapshots": {sha: {path: bytes}}}
        self.fail_commits = False
        self.before_commit = None  # a callable run as a commit arrives (tests: another push lands first)
        self.commits = 0
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, headers) for checks (e.g. token never leaked)

    def new_repo(self, repo_id: str, private: bool) -> None:
        empty = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = {"private": private, "branches": {"main": empty}, "snapshots": {empty: {}}}

    def files(self, repo_id: str, rev: str):
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, None
        sha = repo["branches"].get(rev, rev if rev in repo["snapshots"] else None)
        return sha, (repo["snapshots"].get(sha) if sha else None)


class Handler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # -- helpers ---------------------------------------------------------------------------------------------
    def _send(self, code: int, body=b"", headers=None, content_type="application/json", head=False):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, code: int, error_code: str, message: str, head=False):
        self._send(code, {"error": message}, {"X-Error-Code": error_code, "X-Error-Message": message}, head=head)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _record(self):
        self.state.requests.append((self.command, self.path, dict(self.headers)))

    def _request(self) -> tuple[str, bytes]:
        """Record the request; its path (unquoted) and body."""
        self._record()
        return unquote(urlparse(self.path).path), self._body()

    @staticmethod
    def _repo_id(body: bytes) -> tuple[str, dict]:
        """The repo id of a create/delete request's JSON body, and the body."""
        data = json.loads(body or b"{}")
        return (f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]), data

    # -- routes ----------------------------------------------------------------------------------------------
    def do_POST(self):
        path, body = self._request()
        st = self.state
        if path == "/api/repos/create":
            repo_id, data = self._repo_id(body)
            url = f"http://{self.headers['Host']}/{repo_id}"
            with st.lock:
                if repo_id in st.repos:
                    return self._send(409, {"error": "You already created this model repo", "url": url},
                                      {"X-Error-Code": "RepoExists"})
                st.new_repo(repo_id, bool(data.get("private")) or data.get("visibility") == "private")
            return self._send(200, {"url": url, "name": repo_id})
        if path == "/api/validate-yaml":
            content = json.loads(body)["content"]
            if not content.startswith("---\n"):
                return self._send(400, "Error: the card has no YAML front matter", content_type="text/plain")
            return self._send(200, {"errors": [], "warnings": []})
        m = re.match(r"^/api/models/(.+)/preupload/(.+)$", path)
        if m:
            files = json.loads(body).get("files", [])
            return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files]})
        m = re.match(r"^/api/models/(.+)/branch/(.+)$", path)
        if m:
            repo_id, branch = m.groups()
            with st.lock:
                repo = st.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", "Repository not found")
                if branch in repo["branches"]:
                    return self._error(409, "BranchExists", "Branch already exists")
                repo["branches"][branch] = repo["branches"]["main"]
            return self._send(200, {})
        m = re.match(r"^/api/models/(.+)/commit/(.+)$", path)
        if m:
            return self._commit(*m.groups(), body)
        return self._error(404, "NotFound", f"no route POST {path}")

    def _commit(self, repo_id: str, rev: str, body: bytes):
        st = self.state
        if st.before_commit is not None:
            st.before_commit()
        with st.lock:
            repo = st.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found")
            if rev not in repo["branches"]:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            if st.fail_commits:
                return self._error(500, "InternalError", "simulated failure while committing")
            files = dict(repo["snapshots"][repo["branches"][rev]])
            summary = ""
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "header":
                    summary = value.get("summary", "")
                    if value.get("parentCommit") not in (None, repo["branches"][rev]):
                        return self._error(412, "PreconditionFailed", "A commit has happened since. Please refresh "
                                           "and try again.")
                elif item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] in ("deletedFile", "deletedFolder"):
                    prefix = value["path"]
                    files = {p: c for p, c in files.items() if p != prefix and not p.startswith(prefix.rstrip("/") + "/")}
                else:
                    return self._error(400, "BadRequest", f"unsupported commit item {item['key']!r} (no LFS here)")
            digest = hashlib.sha1(json.dumps(sorted((p, hashlib.sha1(c).hexdigest()) for p, c in files.items())).encode()
                                  + summary.encode() + str(st.commits).encode()).hexdigest()
            repo["snapshots"][digest] = files
            repo["branches"][rev] = digest
            st.commits += 1
        host = self.headers["Host"]
        return self._send(200, {"commitUrl": f"http://{host}/{repo_id}/commit/{digest}", "commitOid": digest,
                                "pullRequestUrl": None})

    def do_DELETE(self):
        path, body = self._request()
        st = self.state
        if path == "/api/repos/delete":
            repo_id, _ = self._repo_id(body)
            with st.lock:
                if st.repos.pop(repo_id, None) is None:
                    return self._error(404, "RepoNotFound", "Repository not found")
            return self._send(200, {})
        m = re.match(r"^/api/models/(.+)/branch/(.+)$", path)
        if m:
            repo_id, branch = m.groups()
            with st.lock:
                repo = st.repos.get(repo_id)
                if repo is None or branch not in repo["branches"]:
                    return self._error(404, "RevisionNotFound", "no such branch")
                del repo["branches"][branch]
            return self._send(200, {})
        return self._error(404, "NotFound", f"no route DELETE {path}")

    def do_GET(self):
        self._get(head=False)

    def do_HEAD(self):
        self._get(head=True)

    def _get(self, head: bool):
        self._record()
        path = unquote(urlparse(self.path).path)
        st = self.state
        m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/(.+))?$", path)
        if m:
            repo_id, rev = m.groups()
            rev = rev or "main"
            sha, files = st.files(repo_id, rev)
            if files is None:
                return self._error(404, "RepoNotFound" if repo_id not in st.repos else "RevisionNotFound", "not found",
                                   head)
            return self._send(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": st.repos[repo_id]["private"],
                                    "siblings": [{"rfilename": p} for p in sorted(files)]}, head=head)
        m = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$", path)
        if m:
            repo_id, rev, sub = m.groups()
            sha, files = st.files(repo_id, rev)
            if files is None:
                return self._error(404, "RepoNotFound", "not found", head)
            entries = [{"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                       for p, c in sorted(files.items()) if not sub or p.startswith(sub.rstrip("/") + "/")]
            return self._send(200, entries, head=head)
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            repo_id, rev, file_path = m.groups()
            sha, files = st.files(repo_id, rev)
            if files is None:
                return self._error(404, "RepoNotFound" if repo_id not in st.repos else "RevisionNotFound", "not found",
                                   head)
            if file_path not in files:
                return self._error(404, "EntryNotFound", f"{file_path} does not exist", head)
            content = files[file_path]
            etag = f'"{hashlib.sha1(content).hexdigest()}"'
            return self._send(200, content, {"X-Repo-Commit": sha, "ETag": etag}, "application/octet-stream", head)
        return self._error(404, "NotFound", f"no route GET {path}", head)


class HubServer:
    """`with HubServer() as hub:` -> hub.url, hub.state. Serves on 127.0.0.1 on a free port, in a thread."""

    def __init__(self):
        self.state = HubState()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
