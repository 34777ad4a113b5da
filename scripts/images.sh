# Test images, shared by scripts/setup and scripts/jupyterhub-line. Sourced, not run: the caller sets
# ROOT, CACHE and BASE_IMAGE and defines log and die.
#   - local/base-cudalike:bookworm (CUDALIKE_IMAGE), from BASE_IMAGE
#   - a hub-ready user image made from it with a venv's `jupyter-gpuspawn build-image`, which pins the
#     image's jupyterhub to that venv's; rebuilt only when the package sources or that version change

# Like NGC/CUDA images, this one bakes NVIDIA_VISIBLE_DEVICES=all: the spawner must override it for CPU-only servers.
CUDALIKE_IMAGE="local/base-cudalike:bookworm"

source_hash() {
  # what goes into the image: the package sources (and, once built, the labextension)
  (cd "$ROOT" && git ls-files -s jupyter_gpuspawn labextension pyproject.toml 2>/dev/null; \
   git -C "$ROOT" diff HEAD -- jupyter_gpuspawn labextension pyproject.toml 2>/dev/null) | sha256sum | cut -c1-16
}

image_label() {  # image_label IMAGE LABEL: the label's value, empty if the image or the label is missing
  docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null | sed 's/^<no value>$//' || true
}

setup_cudalike_image() {
  docker image inspect "$CUDALIKE_IMAGE" >/dev/null 2>&1 && return 0
  printf 'FROM %s\nENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility\n' "$BASE_IMAGE" \
    | docker build -q -t "$CUDALIKE_IMAGE" - >/dev/null
}

build_singleuser_image() {
  # build_singleuser_image VENV TAG: TAG made by VENV's build-image from the cuda-like base, unless TAG
  # already carries these sources and VENV's jupyterhub version
  local venv="$1" tag="$2" hash hub_version
  setup_cudalike_image
  hash="$(source_hash)"
  hub_version="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("jupyterhub"))')"
  if [ "$(image_label "$tag" org.jupyter.gpuspawn.source-hash)" = "$hash" ] \
    && [ "$(image_label "$tag" org.jupyter.gpuspawn.jupyterhub-version)" = "$hub_version" ]; then
    log "image $tag (jupyterhub $hub_version) is up to date"
    return 0
  fi
  local build_log="$CACHE/build-image-$(printf '%s' "$tag" | tr -c 'A-Za-z0-9._-' '_').log"
  log "building $tag (jupyterhub $hub_version) with jupyter-gpuspawn build-image (log: $build_log)"
  "$venv/bin/jupyter-gpuspawn" build-image --base "$CUDALIKE_IMAGE" --tag "$tag" \
    --network host --ca-bundle /etc/ssl/certs/ca-certificates.crt --label "org.jupyter.gpuspawn.source-hash=$hash" \
    >"$build_log" 2>&1 || { tail -30 "$build_log" >&2; die "build-image failed"; }
}
