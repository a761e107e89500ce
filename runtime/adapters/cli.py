"""`kaito adapter push|pull|pack`: adapter images from the command line (the sidecar pusher and the init-container
puller of a Kaito pod are these commands). Only the standard library at module level."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from runtime.kaito import SENTINEL

log = logging.getLogger(__name__)


def _add_auth_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--insecure", action="store_true", help="allow plain http to a non-loopback registry (or list hosts in $KAITO_INSECURE_REGISTRIES)")
    parser.add_argument(
        "--docker-config", type=Path, metavar="FILE",
        help="docker config.json with credentials (a .dockerconfigjson secret); default $DOCKER_CONFIG/config.json "
        "or ~/.docker/config.json",
    )  # fmt: skip
    parser.add_argument("--username", help="registry user name (with --password-stdin)")
    parser.add_argument(
        "--password-stdin", action="store_true",
        help="read the registry password or token from stdin (else $KAITO_REGISTRY_PASSWORD, else the docker config)",
    )  # fmt: skip


def _add_annotation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="base model preset (annotation sh.kaito.model.name)")
    parser.add_argument("--revision", help="base model revision (annotation sh.kaito.model.revision)")
    parser.add_argument("--method", help="tuning method, e.g. lora or qlora (annotation sh.kaito.tuning.method)")
    parser.add_argument(
        "--annotation", action="append", default=[], metavar="KEY=VALUE", help="extra manifest annotation (repeatable)"
    )


def add_commands(sub) -> None:
    adapter = sub.add_parser("adapter", help="push, pull and pack adapter images (OCI, Kaito's /data layout)")
    verbs = adapter.add_subparsers(dest="adapter_command", metavar="VERB", required=True)

    push = verbs.add_parser(
        "push", help="push an adapter directory as an image",
        usage="kaito adapter push [options] DIR REF\n       kaito adapter push [options] --wait-for OUTPUT_DIR REF",
        description="Push DIR (adapter_config.json + adapter_model.safetensors) to REF. With --wait-for OUTPUT_DIR, "
        f"wait for OUTPUT_DIR/{SENTINEL} first (sidecar mode); a failed push exits non-zero and keeps the files, "
        "so a re-run pushes again without retraining.",
    )  # fmt: skip
    push.add_argument("paths", nargs="+", metavar="DIR REF", help="adapter directory (omitted with --wait-for), image reference")
    push.add_argument("--wait-for", type=Path, metavar="OUTPUT_DIR", help=f"wait for OUTPUT_DIR/{SENTINEL}, then push OUTPUT_DIR")
    push.add_argument("--timeout", type=float, default=0, metavar="S", help="give up waiting after S seconds (0: never)")
    push.add_argument("--poll-interval", type=float, default=5.0, metavar="S", help="sentinel poll interval (default 5)")
    push.add_argument("--chunk-size-mb", type=int, default=16, help="upload blobs above this size in PATCH chunks")
    _add_annotation_options(push)
    _add_auth_options(push)
    push.set_defaults(handler=_push)

    pull = verbs.add_parser("pull", help="pull an adapter image into a directory (init-container mode)")
    pull.add_argument("ref", metavar="REF", help="image reference, HOST/REPO:TAG or oci://HOST/REPO:TAG")
    pull.add_argument("--to", type=Path, required=True, metavar="DIR", help="target directory, e.g. /mnt/adapter/<name>")
    _add_auth_options(pull)
    pull.set_defaults(handler=_pull)

    pack = verbs.add_parser("pack", help="pack an adapter directory offline; print its digest")
    pack.add_argument("dir", type=Path, metavar="DIR")
    pack.add_argument("out", type=Path, nargs="?", metavar="OUT", help="write an OCI layout: a directory, or OUT.tar")
    pack.add_argument("--tag", default="latest", help="tag inside the OCI layout (default latest)")
    _add_annotation_options(pack)
    pack.set_defaults(handler=_pack)


def _quiet_http(args) -> None:
    # httpx logs every request at INFO; upload URLs are long and say nothing a user needs. httpcore's DEBUG lines
    # are wire-level (response headers): never wanted, even with -v.
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    if not getattr(args, "verbose", False):
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _credentials(args):
    from runtime.adapters.credentials import ENV_PASSWORD, Credentials
    from runtime.command import CommandError

    if args.password_stdin:
        if not args.username:
            raise CommandError("--password-stdin needs --username")
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("--password-stdin: stdin held no password")
        return Credentials(username=args.username, password=password, source="--password-stdin")
    if args.username:
        if not os.environ.get(ENV_PASSWORD):
            raise CommandError(f"--username needs --password-stdin or ${ENV_PASSWORD}")
        return Credentials(username=args.username, password=os.environ[ENV_PASSWORD], source="environment")
    return None  # the environment or a docker config, resolved per registry host


def _annotations(args) -> dict[str, str]:
    from runtime.adapters.image import adapter_annotations
    from runtime.command import CommandError

    annotations = adapter_annotations(args.preset, args.revision, args.method)
    for item in args.annotation:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--annotation {item!r}: expected KEY=VALUE")
        annotations[key] = value
    return annotations


def _wait_for_sentinel(output_dir: Path, timeout: float, poll: float) -> None:
    from runtime.command import CommandError

    sentinel = output_dir / SENTINEL
    deadline = time.monotonic() + timeout if timeout > 0 else None
    log.info("waiting for %s", sentinel)
    while not sentinel.exists():
        if deadline is not None and time.monotonic() > deadline:
            raise CommandError(f"--wait-for: {sentinel} did not appear within {timeout:g} s", code=1)
        time.sleep(poll)
    log.info("found %s", sentinel)


def _push(args) -> int:
    from runtime.command import CommandError

    if args.wait_for is not None:
        if len(args.paths) != 1:
            raise CommandError("with --wait-for OUTPUT_DIR, give only REF (the adapter is OUTPUT_DIR)")
        adapter_dir, ref = args.wait_for, args.paths[0]
    else:
        if len(args.paths) != 2:
            raise CommandError("usage: kaito adapter push DIR REF (or --wait-for OUTPUT_DIR REF)")
        adapter_dir, ref = Path(args.paths[0]), args.paths[1]
    if args.chunk_size_mb < 1:
        raise CommandError("--chunk-size-mb must be at least 1")
    annotations = _annotations(args)
    credentials = _credentials(args)
    _quiet_http(args)

    from runtime.adapters.credentials import CredentialsError
    from runtime.adapters.oci import Reference, RegistryError, push_adapter

    try:
        Reference.parse(ref)
    except ValueError as err:
        raise CommandError(str(err)) from err
    if args.wait_for is not None:
        _wait_for_sentinel(adapter_dir, args.timeout, args.poll_interval)
    try:
        digest = push_adapter(
            adapter_dir, ref, annotations=annotations, auth=credentials, insecure=args.insecure,
            docker_config=args.docker_config, chunk_size=args.chunk_size_mb * 1024 * 1024,
        )  # fmt: skip
    except (RegistryError, CredentialsError, FileNotFoundError, ValueError) as err:
        raise CommandError(f"push of {adapter_dir} to {ref} failed (the adapter files are kept): {err}", code=1) from err
    print(f"{ref.removeprefix('oci://')}@{digest}")
    return 0


def _pull(args) -> int:
    from runtime.command import CommandError

    credentials = _credentials(args)
    _quiet_http(args)
    from runtime.adapters.credentials import CredentialsError
    from runtime.adapters.oci import Reference, RegistryError, pull

    try:  # a malformed reference is a usage error (2); everything after it is a pull failure (1), as for push
        Reference.parse(args.ref)
    except ValueError as err:
        raise CommandError(str(err)) from err
    try:
        dest = pull(args.ref, args.to, insecure=args.insecure, docker_config=args.docker_config, auth=credentials)
    except (RegistryError, CredentialsError, OSError, ValueError) as err:
        raise CommandError(f"pull of {args.ref} failed: {err}", code=1) from err
    print(f"pulled {args.ref} into {dest}")
    return 0


def _pack(args) -> int:
    from runtime.command import CommandError

    annotations = _annotations(args)
    from runtime.adapters.oci import pack_adapter, write_oci_layout

    try:
        packed = pack_adapter(args.dir, annotations)
    except FileNotFoundError as err:
        raise CommandError(str(err)) from err
    if args.out:
        write_oci_layout(packed, args.out, tag=args.tag)
        log.info("wrote OCI layout %s (tag %s)", args.out, args.tag)
    print(packed.manifest_digest)
    return 0
