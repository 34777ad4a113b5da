"""GPUDockerSpawner: DockerSpawner that hands each server exactly its GPUs, by UUID, as its own
user."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import os
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import docker.errors
import requests
from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port
from tornado import web
from traitlets import Any, Dict, Union, default

from . import homes, images
from .allocation import (
    AllocationError,
    GPUAllocator,
    GPURequest,
    NoGPUAvailable,
    UserGPULimit,
    largest_server,
)
from .budget import BudgetState
from .cached import Cached, ReadTimeout
from .courses import Course, CourseCatalog, conflicting_mounts
from .engines import CONTAINERS, Engine
from .errors import LinkNotStarted, SpawnRefused, engine_error_text
from .form import render_form, template_environment
from .gpus import (
    GPUInventory,
    InventoryError,
    assignment_message,
    format_size,
    simulated_description,
)
from .idle import Holder, IdlePolicy
from .metrics import HubView, hub_metrics
from .network import BUILTIN_NETWORKS, DEFAULT_NETWORK, NetworkError, ensure_network
from .options import OptionsError, options_from_form, validate_options
from .plan import (
    AdminSettings,
    Bind,
    ContainerPlan,
    Hardening,
    docker_create_kwargs,
    plan_container,
)
from .readiness import ServerExited, wait_until_answering
from .reclaim import NOTICE_FILE, Reclaimer, notice_dir, prepare_notice_dir
from .reconcile import Reconciler
from .records import UsageRecords
from .settings import GPUSpawnerSettings
from .spec import GPUAssignment, oauth_client_id
from .usage import Hold, UsageDB
from .waitroom import POOL, QueueTimeout, WaitRoom, ordinal, pool_label, waiting_message

# how long a user network found isolated is trusted without asking Docker again
NETWORK_CHECK_SECONDS = 30
# seconds the hub's start_timeout must leave after a queue wait, beyond http_timeout, to create and
# start a container
QUEUE_START_MARGIN = 30


class _HubProcessState:
    """What every spawner of this hub process shares: the allocator and its reconciler, reserved
    ports."""

    def __init__(
        self, foreign_memory_threshold: int, engine: Engine, runtime_dir="", owner="", log=None
    ):
        self.allocator = GPUAllocator(foreign_memory_threshold)
        # its pending container removals are kept in runtime_dir: a restarted hub still removes them
        self.reconciler = Reconciler(
            self.allocator,
            engine.list_labelled,
            engine.remove,
            runtime_dir=runtime_dir,
            owner=owner,
            log=log,
        )
        self.waitroom = WaitRoom(self.allocator)
        self.metrics = hub_metrics()
        self.reclaimer = Reclaimer(self.allocator, self.waitroom, self.metrics)
        self.ports: set = set()
        self.networks_checked: dict = {}  # network name -> loop time it was last found isolated
        self.executor: ThreadPoolExecutor | None = None
        # image ID -> has jupyterhub-singleuser (images without our label)
        self.probed_images: dict = {}
        self.catalogs: dict = {}  # (courses_dir, data roots) -> Cached catalog view
        self.form_environments: dict = {}  # template paths -> jinja2 Environment
        self.records: dict = {}  # usage_db_url -> UsageRecords
        # (kind, simulated file, cache seconds) -> GPUInventory, made on first use
        self.inventories: dict = {}
        # Swarm: (node hostname, image) -> (ImageReadiness or None, loop time)
        self.node_images: dict = {}
        # Swarm: node hostname -> its dockerd's default runtime, as last asked
        self.node_runtimes: dict = {}


def _options_applied_in_start(spawner, user_options):
    pass


def _course_of(state: _HubProcessState, key) -> str:
    spawner = state.reclaimer.servers.get(key)
    assignment = getattr(spawner, "_assignment", None)
    return assignment.course if assignment is not None else ""


def _engine_unreachable(error: Exception) -> bool:
    """Docker did not answer at all (its socket gone, refused, timed out), as opposed to an answer
    refusing something (docker.errors.APIError)."""
    if isinstance(error, (requests.ConnectionError, requests.Timeout)):
        return True
    # docker-py's client asks the engine's API version first and wraps that failure
    return (
        isinstance(error, docker.errors.DockerException)
        and not isinstance(error, docker.errors.APIError)
        and "server API version" in str(error)
    )


class GPUDockerSpawner(DockerSpawner, GPUSpawnerSettings):
    """Spawns single-user servers in Docker containers with GPUs assigned by UUID.

    docs/reference/configuration.md lists every option, generated from the help text below
    (also in `jupyterhub --help-all`).
    """

    engine: Engine = CONTAINERS  # what a server runs as: a container here, a service on Swarm

    # Any JSON value, not only an object. JupyterHub 5 hands the spawn request's body to this trait
    # as it is (6 answers 400 to a body that is not an object), and Spawner's Dict trait would then
    # raise outside the spawn's error handling: HTTP 500, and a server record left "ready" that
    # nothing can stop. start() refuses what is not an object with 400, as any bad option, and the
    # failed spawn is cleaned up as usual.
    user_options = Union([Dict(), Any()], help="The spawn options (checked in start()).")

    @default("remove")
    def _default_remove(self):
        # GPUs are re-assigned on every start; a kept container would carry an old assignment. Homes
        # persist.
        return True

    @default("network_name")
    def _default_network_name(self):
        # an isolated bridge the spawner creates (network.py); "host" only on trusted single-user
        # hosts
        return DEFAULT_NETWORK

    @default("use_internal_ip")
    def _default_use_internal_ip(self):
        # the hub reaches each server on its container address (our network) or on 127.0.0.1 (host
        # mode); only Docker's default bridge needs published ports
        return self.network_name != "bridge"

    @default("start_timeout")
    def _default_start_timeout(self):
        # the whole of start() counts, a wait in the GPU queue included: leave room for it and the
        # start after it (also when gpu_queue is off, for courses that turn it on)
        if self.gpu_queue_timeout > 0:
            return int(self.gpu_queue_timeout + self.http_timeout + QUEUE_START_MARGIN + 60)
        return 60

    @default("options_from_form")
    def _default_options_from_form(self):
        return options_from_form

    def options_from_query(self, query_data):
        if self.spawn_from_link:
            return super().options_from_query(query_data)
        # JupyterHub shows the form instead, with this message: preselect what the link asked for
        try:
            self._link_options = self.options_from_form(query_data)
        except Exception:  # a link with bad options preselects nothing; the form says what is valid
            self._link_options = {}
        raise LinkNotStarted(
            "This link asks to start a server for you. Check the choice below and press Start."
        )

    @default("options_form")
    def _default_options_form(self):
        return lambda spawner: spawner.render_options_form()

    @default("apply_user_options")
    def _default_apply_user_options(self):
        # user_options are validated and applied in start(), for form and API alike (JupyterHub <
        # 5.3 has no hook). This default only tells JupyterHub >= 5.3 they are handled, which it
        # otherwise logs per spawn.
        return _options_applied_in_start

    # ---- set-up ----------------------------------------------------------------------------------
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._events: list = []
        self._assignment: GPUAssignment | None = None
        self._identity: homes.Identity | None = None
        self._host_home = ""
        self._chosen_image = ""
        self._default_image = self.image
        self._course: Course | None = None
        self._simulated_env = ""
        # poll or stop saw the container gone: its GPUs may be released
        self._stop_confirmed = False
        # host directory of this server's notices, mounted read-only (GPU servers)
        self._notice_dir = ""
        # when this server's container was started (idle time never counts before)
        self._started_epoch = 0.0
        # {"at", "message"}: this server's GPUs were reclaimed; kept in state
        self._reclaimed: dict | None = None
        # why the running server ends, for its usage records (usage.END_REASONS)
        self._end_reason = ""
        if self.name:
            self.oauth_client_id = oauth_client_id(self.user.name, self.name)
        # this start's container, decided before it is created
        self._plan: ContainerPlan | None = None
        # what a spawn link asked for (spawn_from_link off): preselected in the next form
        self._link_options: dict | None = None
        # the last poll could not ask Docker (logged once per outage)
        self._docker_unanswered = False

    @property
    def _shared(self) -> _HubProcessState:
        """The hub-process state of this spawner class: its allocator, queue, reconciler, reclaimer
        and caches. Each spawner class has its own (a second class in the same hub, e.g. for another
        engine, shares nothing by accident); every instance of one class shares it."""
        cls = type(self)
        state = cls.__dict__.get("_hub_process_state")
        if state is None:
            # the admin's settings are the class's (one config per spawner class): GPUs busy outside
            # the hub are judged by the first instance's threshold, for the whole hub process
            state = _HubProcessState(
                self.busy_gpu_memory_threshold,
                self.engine,
                self.runtime_dir,
                cls.__name__,
                self.log,
            )
            cls._hub_process_state = state
        return state

    @property
    def allocator(self) -> GPUAllocator:
        # per-user limits travel in each request; nothing of one spawner's config is written into it
        return self._shared.allocator

    @property
    def inventory(self) -> GPUInventory:
        """This spawner class's GPU source, shared by its instances (one cache, one NVML sweep per
        second)."""
        # keyed by the settings that make it: a ProfilesSpawner profile or a pre_spawn_hook may set
        # others
        key = (
            self.gpu_inventory,
            os.path.abspath(self.simulated_gpus) if self.simulated_gpus else "",
            self.gpu_inventory_cache_seconds,
        )
        if key not in self._shared.inventories:
            try:
                self._shared.inventories[key] = self._make_inventory()
            except InventoryError as e:
                raise SpawnRefused(500, f"GPU inventory is misconfigured: {e}") from None
        return self._shared.inventories[key]

    def _make_inventory(self) -> GPUInventory:
        return GPUInventory(
            self.gpu_inventory, self.simulated_gpus, self.gpu_inventory_cache_seconds
        )

    async def gpu_snapshot(self):
        try:
            return await self.inventory.snapshot()
        except InventoryError as e:
            self.log.error("GPU inventory: %s", e)
            raise SpawnRefused(500, f"GPU inventory is misconfigured: {e}") from None
        except ReadTimeout as e:  # hung before any snapshot was taken
            self.log.error("GPU inventory: %s", e)
            raise SpawnRefused(
                503, "The GPUs do not answer right now; try again later, or tell the admin."
            ) from None

    @property
    def executor(self):
        if self._shared.executor is None:
            self._shared.executor = ThreadPoolExecutor(
                max(1, self.docker_threads), thread_name_prefix="gpuspawn-docker"
            )
        return self._shared.executor

    async def _blocking(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    @property
    def server_key(self):
        return (self.user.name, self.name or "")

    # ---- progress --------------------------------------------------------------------------------
    def _event(self, message: str, progress: int):
        self.log.info("%s: %s", self._log_name, message)
        self._events.append({"progress": progress, "message": message})

    async def progress(self):
        events, sent = self._events, 0
        while True:
            if events is not self._events:  # a new start began
                events, sent = self._events, 0
            while sent < len(events):
                yield events[sent]
                sent += 1
            await asyncio.sleep(0.2)

    # ---- reconcile: the allocator follows the running containers ---------------------------------
    async def _ensure_reconciled(self):
        if self._shared.reconciler.on_round is None:
            self._shared.reconciler.on_round = self._records().follow
            self._shared.reconciler.tracked = lambda: set(self._shared.reclaimer.servers)
        try:
            await self._shared.reconciler.ensure_started(
                self.docker_call, self.log, self.reconcile_interval
            )
        except Exception as e:
            self.log.error("Cannot read running containers from Docker: %s", engine_error_text(e))
            raise SpawnRefused(
                503,
                "The container engine does not answer right now. Try again in a minute; if it "
                "keeps happening, tell the admin the time of this attempt.",
            ) from None
        try:
            inventory = self.inventory
        except SpawnRefused:
            return  # misconfigured: every start says so; there is nothing to sample
        if self._shared.metrics.view is None:
            self._shared.metrics.view = HubView(
                gpus=inventory.last_gpus,
                allocator=self._shared.allocator,
                waiting=lambda: {POOL: len(self._shared.waitroom.queue.waiting(POOL))},
                course_of=functools.partial(_course_of, self._shared),
            )
        self._shared.reclaimer.ensure_started(
            interval=self.gpu_idle_check_seconds,
            utilization=self.gpu_idle_utilization,
            runtime_dir=self.runtime_dir,
            snapshot=inventory.snapshot,
            blocking=self._blocking,
            log=self.log,
        )

    async def docker_call(self, func, *args):
        """Run func(docker_client, *args) in the Docker executor."""
        # self.client is built lazily and its first use asks dockerd for its version: off the event
        # loop too
        return await self._blocking(lambda: func(self.client, *args))

    # ---- user options ----------------------------------------------------------------------------
    def _catalog(self) -> Cached:
        key = (self.courses_dir, tuple(self.course_data_roots))
        if key not in self._shared.catalogs:
            catalog = CourseCatalog(self.courses_dir, self.course_data_roots)
            self._shared.catalogs[key] = Cached(catalog.refresh, 1.0, "courses")
        return self._shared.catalogs[key]

    async def user_courses(self, snapshot):
        """(courses this user may use, every course id, catalog errors). Without course files: the
        implicit one."""
        if not self.courses_dir:
            implicit = Course.implicit(
                default_image=self._default_image,
                allowed_images=self._get_allowed_images(),
                default_gpus=self.default_gpus,
                max_gpus=largest_server(snapshot.gpus),
                policy=self.gpu_policy,
                max_users_per_gpu=self.max_users_per_gpu,
            )
            return [implicit], [""], ()
        view = await self._catalog().get()
        groups = [g.name for g in getattr(self.user, "groups", [])]
        admin = bool(getattr(self.user, "admin", False))
        visible = [c for c in view.courses if c.visible_to(self.user.name, groups, admin)]
        return visible, [c.id for c in view.courses], view.errors

    async def _validate_user_options(self, snapshot):
        visible, known, _ = await self.user_courses(snapshot)
        try:
            return validate_options(
                self.user_options,
                visible=visible,
                known_ids=known,
                max_gpus=largest_server(snapshot.gpus),
            )
        except OptionsError as e:
            raise SpawnRefused(e.status, str(e)) from None

    async def render_options_form(self):
        await self._ensure_reconciled()
        snapshot = await self.gpu_snapshot()
        visible, _, errors = await self.user_courses(snapshot)
        paths = tuple(self.form_template_paths)
        if paths not in self._shared.form_environments:
            self._shared.form_environments[paths] = template_environment(paths)
        holds_other = self.allocator.user_gpu_count(
            self.user.name, excluding=self.server_key
        ) > 0 or self._shared.waitroom.waiting_for(self.user.name)
        queue = self._shared.waitroom.queue
        waiting, place = (
            len(queue.waiting(POOL)),
            queue.position_if_joined(POOL, holds_other=holds_other),
        )

        def queue_line(course):
            if self._queue_seconds(course, warn=False) <= 0:
                return ""
            return f"{waiting} waiting · you would be {ordinal(place)}"

        budgets = {}
        for course in visible:
            budget = await self._budget_state(course, course.id) if course.gpu_max else None
            if budget is not None:
                budgets[course.id] = budget.line()
        return render_form(
            self._shared.form_environments[paths],
            courses=visible,
            budgets=budgets,
            previous=self._take_link_options() or self.user_options or {},
            snapshot=snapshot,
            allocator=self.allocator,
            admin_errors=errors if getattr(self.user, "admin", False) else (),
            queue_line=queue_line,
            waiting=waiting,
            notice=self._reclaimed["message"] if self._reclaimed else "",
        )

    def _take_link_options(self) -> dict | None:
        options, self._link_options = self._link_options, None
        return options

    async def check_allowed(self, image):
        # DockerSpawner.start re-checks user_options['image']; ours was validated (and resolved)
        # already.
        return self._chosen_image or await super().check_allowed(image)

    # ---- identity and home -----------------------------------------------------------------------
    async def _resolve_identity(self) -> homes.Identity:
        if self.uid_gid_hook:
            result = self.uid_gid_hook(self)
            if inspect.isawaitable(result):
                result = await result
            uid, gid = (int(x) for x in result)
            identity = homes.Identity(uid, gid, "hook")
        else:
            uid_map = homes.UidMap(self.uid_map_file, *self.uid_range)
            identity = await self._blocking(
                homes.resolve_identity,
                self.user.name,
                self.user_id_source,
                self.min_uid,
                uid_map,
                self._authenticator_vouches_for_host_accounts(),
            )
        if identity.uid == 0 or identity.gid == 0:
            raise homes.HomeError(
                "Containers never run as root; the uid/gid for this user resolved to 0."
            )
        return identity

    def _authenticator_vouches_for_host_accounts(self) -> bool:
        """A LocalAuthenticator (PAM) logs users in as their host account; a dummy, shared-password
        or OAuth login only proves a name, which must not unlock the host account that happens to
        carry it."""
        from jupyterhub.auth import LocalAuthenticator

        return isinstance(getattr(self, "authenticator", None), LocalAuthenticator)

    def _container_home(self) -> str:
        return self.container_home_template.format(username=homes.safe_dir_name(self.user.name))

    # ---- start / stop ----------------------------------------------------------------------------
    async def start(self):
        self._events = []
        self._chosen_image = ""
        self._stop_confirmed = False
        self._end_reason = ""
        self._started_at = asyncio.get_running_loop().time()
        key = self.server_key
        # in flight: the reconcile keeps this server's GPUs although no container runs for it yet
        self._shared.reconciler.starting.add(key)
        try:
            return await self._start()
        except (web.HTTPError, asyncio.CancelledError):
            raise
        except Exception as e:  # before anything was held (after it, _start says so itself)
            raise self._start_failed(e) from None
        finally:
            self._shared.reconciler.starting.discard(key)

    def _name_the_course(self, course_id: str) -> None:
        """A start that named no course (the REST API) got the first the user may use: say which in
        its user_options, kept in the hub's database, which the instructors' pages list their
        courses' servers by, and the next spawn form preselects."""
        self.user_options = dict(self.user_options, course=course_id)
        if self.orm_spawner is not None:
            self.orm_spawner.user_options = self.user_options

    def _start_failed(self, error: Exception) -> SpawnRefused:
        """What a student is told of an unexpected error in a start (JupyterHub would show the raw
        exception or "Internal Server Error"); the details go to the log, for the admin."""
        self.log.error("%s: start failed", self._log_name, exc_info=error)
        if _engine_unreachable(error):
            what = "the container engine does not answer right now"
        else:
            what = engine_error_text(error)
        return SpawnRefused(
            500,
            f"Your server could not be started ({what}). Try again in a minute; if it keeps "
            "happening, tell the admin the time of this attempt.",
        )

    async def _start(self):
        await self._ensure_reconciled()
        snapshot = await self.gpu_snapshot()
        choice = await self._validate_user_options(snapshot)
        course = choice.course
        if course.id and self.user_options.get("course") != course.id:
            self._name_the_course(course.id)
        # before the budget: a refused start still removes a container left by this server's failed
        # stop, which would otherwise keep its GPUs and spend the budget for good
        await self._clear_previous_hold()
        if choice.gpus:
            budget = await self._budget_state(course, course.id)
            if budget is not None and budget.left <= 0:
                self._shared.metrics.refusals.labels("budget").inc()
                self._event(budget.spent(), 0)
                raise SpawnRefused(403, budget.spent())
        await self._preflight_image(choice.image)
        await self._ensure_network()
        try:
            host_home = await self._blocking(
                homes.host_home_path, self.home_template, self.user.name
            )
            identity = await self._resolve_identity()
        except homes.HomeError as e:
            raise SpawnRefused(400, str(e)) from None
        await self._check_course_data(course, host_home)

        request = GPURequest(
            user=self.user.name,
            server=self.name or "",
            count=choice.gpus,
            policy=course.policy,
            max_users_per_gpu=course.max_users_per_gpu,
            user_limit=self.max_gpus_per_user,
        )
        waited = False
        try:
            if request.count and len(self._shared.waitroom):
                # others wait for GPUs: a new start goes behind them, never around them
                raise NoGPUAvailable(
                    f"{len(self._shared.waitroom)} waiting for a GPU before you; this course has "
                    f"no "
                    "queue: try again later, or start a CPU-only server."
                )
            # choose + reserve: synchronous, nothing awaited in between
            uuids = self.allocator.allocate(request, self._placeable_gpus(snapshot))
        except NoGPUAvailable as e:
            wait = self._queue_seconds(
                course, spent=asyncio.get_running_loop().time() - self._started_at
            )
            if wait <= 0 or not 0 < request.count <= largest_server(snapshot.gpus):
                self._refuse_gpus(e)
            uuids, waited = await self._wait_in_queue(request, wait), True
        except AllocationError as e:
            self._refuse_gpus(e)

        try:
            if waited:  # the inventory, and this student's budget, may have changed during the wait
                snapshot = await self.gpu_snapshot()
                budget = await self._budget_state(course, course.id)
                # the failed start below gives the GPUs back
                if budget is not None and budget.left <= 0:
                    self._shared.metrics.refusals.labels("budget").inc()
                    self._event(budget.spent(), 0)
                    raise SpawnRefused(403, budget.spent())
            self._event(assignment_message(uuids, snapshot), 10)
            self._simulated_env = simulated_description(uuids, snapshot)
            self._assignment = GPUAssignment(
                user=self.user.name,
                server=self.name or "",
                gpus=uuids,
                policy=course.policy,
                max_users_per_gpu=course.max_users_per_gpu,
                course=course.id,
                image_key=choice.image_key,
                node=self._node_for(uuids, snapshot),
            )
            self._course = course
            self._kept_rules = course.kept_rules() if course.id else None
            self._kept_rules_noted = False
            self._identity, self._host_home = identity, host_home
            self.image = self._chosen_image = choice.image
            try:
                if await self._blocking(
                    homes.ensure_home,
                    host_home,
                    identity,
                    homes.home_root(self.home_template),
                    self.create_home,
                ):
                    self._event(f"Created your home directory {host_home}", 15)
            except homes.HomeError as e:
                self.log.error("%s: %s", self._log_name, e)
                raise SpawnRefused(500, f"{e} Tell the admin.") from None
            if self.network_name == "host":
                self.ip = "127.0.0.1"
                self.port = self._reserve_port()
            await self._prepare_notices()
            self._plan = self._make_plan()
            await self._remove_outdated_container()
            ip, port = await super().start()
            await self._wait_until_answering(ip, port)
            self._started_epoch = time.time()
            self._reclaimed = None  # the spawn page showed it until a server runs again
            if self._notice_dir:
                self._shared.reclaimer.register(self, self._notice_dir)
            if self._assignment.gpus:
                # in the background: a slow database must not hold up the student's server
                self._records().later(UsageDB.record, self._usage_hold(), self._started_epoch)
            return ip, port
        except asyncio.CancelledError:
            # the hub gave up on this start (start_timeout) and stops the server next; until Docker
            # confirms the container is gone its GPUs stay held (a create still running in the
            # executor is caught by the reconcile as a container left "created")
            if self.object_id:
                self._shared.reconciler.removals[self.object_id] = self.server_key
            elif self.engine.kind == "service":
                # a service may be created (and then runs by itself) after the cancel: removed by
                # name
                self._shared.reconciler.removals[self.object_name] = self.server_key
            else:
                self._release()
            raise
        except Exception as e:
            await self._end_failed_start()
            if isinstance(e, web.HTTPError):
                raise
            raise self._start_failed(e) from None

    async def _prepare_notices(self):
        """A GPU server gets an empty notice directory before its container mounts it."""
        self._notice_dir = ""
        if not self._assignment.gpus:
            return
        directory = notice_dir(self.runtime_dir, self.server_key)
        try:
            await self._blocking(prepare_notice_dir, directory)
        except OSError as e:
            self.log.error("%s: cannot prepare %s (runtime_dir): %s", self._log_name, directory, e)
            raise SpawnRefused(
                500, "The hub cannot write its runtime files; tell the admin."
            ) from None
        self._notice_dir = directory

    # ---- idle GPUs: what the reclaimer asks of a server ------------------------------------------
    # the start-time rules of this server's course (Course.kept_rules), kept in state: they judge it
    # when its course is not in the catalog (file gone, renamed, or invalid since a hub restart)
    _kept_rules: dict | None = None
    _kept_rules_noted = False

    async def _running_course(self) -> Course | None:
        """The course of the running server as its file says now (an edit applies to running servers
        too); without it in the catalog, the rules the server started with; None without course
        files (or kept rules, for a server started before they were kept): the spawner's settings
        apply."""
        course_id = self._assignment.course if self._assignment else ""
        if not (self.courses_dir and course_id):
            return None
        view = await self._catalog().get()
        live = next((c for c in view.courses if c.id == course_id), None)
        if live is not None:
            self._kept_rules_noted = False
            return live
        kept = Course.from_kept_rules(course_id, self._kept_rules)
        if kept is not None and not self._kept_rules_noted:
            self._kept_rules_noted = True
            self.log.warning(
                "%s: course %r is not in the course catalog (its file is missing or invalid); the "
                "server keeps the rules it was started with: %s",
                self._log_name,
                course_id,
                kept.kept_rules(),
            )
        return kept

    async def idle_policy(self, course: Course | None = None) -> IdlePolicy:
        """The course's idle settings where it has them, the spawner's otherwise."""

        def pick(name, fallback):
            value = getattr(course, name)
            return fallback if value is None else value

        if course is None:
            return IdlePolicy(
                self.gpu_idle_minutes, self.gpu_idle_warn_minutes, self.gpu_idle_reclaim
            )
        return IdlePolicy(
            pick("idle_minutes", self.gpu_idle_minutes),
            pick("idle_warn_minutes", self.gpu_idle_warn_minutes),
            pick("idle_reclaim", self.gpu_idle_reclaim),
        )

    async def idle_holder(self) -> Holder | None:
        assignment = self._assignment
        if assignment is None or not assignment.gpus or not self.ready:
            return None
        # a GPU shared by n servers comes free when all n stop: each stop frees 1/n of it
        frees = sum(1 / max(1, len(self.allocator.holders_of(uuid))) for uuid in assignment.gpus)
        course = await self._running_course()
        holder = Holder(
            key=self.server_key,
            gpus=assignment.gpus,
            started=self._started_epoch,
            policy=await self.idle_policy(course),
            course=assignment.course,
            frees=frees,
        )
        budget = await self._budget_state(course, assignment.course)
        if budget is None:
            return holder
        # every server of this student in this course spends the same budget
        rate = sum(
            len(a.gpus) * a.share
            for a in (
                getattr(s, "_assignment", None) for s in self._shared.reclaimer.servers.values()
            )
            if a is not None and a.user == assignment.user and a.course == assignment.course
        )
        return dataclasses.replace(
            holder,
            budget_seconds=budget.seconds_left(rate or len(assignment.gpus)),
            budget_warning=budget.warning(),
            budget_stopped=budget.stopped(),
        )

    # ---- budgets ---------------------------------------------------------------------------------
    async def _budget_state(self, course: Course | None, course_id: str) -> BudgetState | None:
        """This user's GPU-hour budget in ``course`` this week; None without a budget (or for an
        admin)."""
        limit = (
            course.weekly_hours
            if course is not None and course.weekly_hours is not None
            else self.gpu_hours_per_week
        )
        if getattr(self.user, "admin", False) and not self.gpu_budget_admins:
            return None
        title = course.title if course is not None and course.id else "this hub"
        return await self._records().budget(
            self.user.name, limit, self.gpu_budget_week_start, course_id, title
        )

    async def stop_for_reclaim(
        self, message: str, started: float, reason: str = "reclaimed idle"
    ) -> bool:
        """Stop this server through the hub, as its REST API would (proxy route first, then
        User.stop: the hub's database, the proxy and the GPU queue all follow); the message waits
        for the student's next spawn page."""
        if self.pending or not self.ready or started != self._started_epoch:
            return False  # starting or stopping, or restarted since it was judged idle
        self._reclaimed = {"at": time.time(), "message": message}
        self._end_reason = reason
        user = self.user
        # before anything is awaited, as the hub's own stop does: no start slips in
        self._stop_pending = True
        try:
            proxy = (getattr(user, "settings", None) or {}).get("proxy")
            if proxy is not None:
                await proxy.delete_user(user, self.name)
        finally:
            await user.stop(self.name)
        return True

    # ---- usage records ---------------------------------------------------------------------------
    def _records(self) -> UsageRecords:
        url = self.usage_db_url
        if url not in self._shared.records:
            self._shared.records[url] = UsageRecords(url, self.log)
        return self._shared.records[url]

    def _usage_hold(self) -> Hold:
        a = self._assignment
        return Hold(a.user, a.server, a.course, a.gpus, a.share)

    def _queue_seconds(self, course: Course, spent: float = 0.0, warn: bool = True) -> float:
        """How long this start may wait for GPUs: the course's or the spawner's queue timeout,
        within what the hub's start_timeout leaves once ``spent`` seconds of start() have passed (an
        image pull, say) and the container must still start and answer after the wait."""
        enabled = course.queue if course.queue is not None else self.gpu_queue
        timeout = (
            course.queue_timeout if course.queue_timeout is not None else self.gpu_queue_timeout
        )
        if not enabled or timeout <= 0:
            return 0
        budget = self.start_timeout - spent - self.http_timeout - QUEUE_START_MARGIN
        if budget < timeout and warn:
            self.log.warning(
                "Spawner.start_timeout (%s s) cuts the GPU queue wait to %.0f s; set it to at "
                "least "
                "gpu_queue_timeout + http_timeout + %s s plus the time an image pull takes",
                self.start_timeout,
                max(0, budget),
                QUEUE_START_MARGIN,
            )
        return max(0, min(timeout, budget))

    async def _wait_in_queue(self, request: GPURequest, seconds: float):
        label = pool_label((await self.gpu_snapshot()).gpus)
        # a second named server in line counts as holding: one student cannot queue ahead of the
        # class twice
        holds_other = self.allocator.user_gpu_count(
            request.user, excluding=request.key
        ) > 0 or self._shared.waitroom.waiting_for(request.user)
        joined, outcome = time.monotonic(), "cancelled"
        try:
            uuids = await self._shared.waitroom.wait(
                request,
                holds_other=holds_other,
                timeout=seconds,
                gpus=self._inventory_gpus,
                on_place=lambda at, n: self._event(waiting_message(at, n, label), 5),
            )
            outcome = "granted"
            return uuids
        except QueueTimeout:
            outcome = "timeout"
            minutes = f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.0f} seconds"
            self._refuse_gpus(
                NoGPUAvailable(
                    f"No GPU came free within {minutes}; nothing is held for you. Try "
                    "again later, or start a CPU-only server."
                ),
                "queue_timeout",
            )
        except AllocationError as e:
            outcome = "refused"
            self._refuse_gpus(e)
        finally:
            self._shared.metrics.queue_wait.labels(outcome).observe(time.monotonic() - joined)

    def _refuse_gpus(self, error: AllocationError, reason: str = ""):
        """Tell the student why there are no GPUs for this start (409), and count it."""
        if not reason:
            reason = "user_limit" if isinstance(error, UserGPULimit) else "no_gpu"
        self._shared.metrics.refusals.labels(reason).inc()
        self._event(error.message, 0)
        raise SpawnRefused(409, error.message) from None

    async def _inventory_gpus(self):
        return self._placeable_gpus(await self.gpu_snapshot())

    def _placeable_gpus(self, snapshot) -> tuple:
        """The GPUs this start may be given: all of them on one host (GPUSwarmSpawner: those on
        nodes that have the image)."""
        return snapshot.gpus

    def _node_for(self, uuids, snapshot) -> str:
        """The node the server runs on: "" on one host (GPUSwarmSpawner: the node of its GPUs)."""
        return ""

    async def _clear_previous_hold(self):
        """A hold left by this server's last container (its stop failed, or Docker did not confirm
        it stopped) goes only with that container: allocating anew would otherwise free GPUs it may
        still use."""
        key = self.server_key
        holds = bool(self.allocator.assignment(*key))
        left = [cid for cid, k in self._shared.reconciler.removals.items() if k == key]
        if not left and not holds:
            return
        obj = await self.get_object()
        object_id = obj[self.object_id_key] if obj else ""
        if (
            object_id
            and object_id not in left
            and await self.docker_call(self.engine.holds_gpus, object_id)
        ):
            left.append(object_id)
        for container_id in left:
            try:
                await self.docker_call(self.engine.remove, container_id)
            except Exception as e:
                self.log.error(
                    "%s: the previous container %s cannot be removed yet: %s",
                    self._log_name,
                    container_id[:12],
                    e,
                )
                if not holds:
                    continue  # it holds no GPUs: the reconcile keeps trying, the start goes ahead
                raise SpawnRefused(
                    409, "Your previous server is still stopping; try again in a minute."
                ) from None
            self._shared.reconciler.removals.pop(container_id, None)
        self.object_id = ""
        self.allocator.release(*key)

    async def _end_failed_start(self):
        """Remove the container of a failed start, then free its GPUs; if Docker cannot confirm the
        container is gone, the GPUs stay held and the reconcile removes it and frees them."""
        # perhaps the network went away: check it again
        self._shared.networks_checked.pop(self.network_name, None)
        container_id = self.object_id
        if container_id:
            try:
                await self.remove_object()
                self.object_id = ""
            except Exception as e:
                self.log.error(
                    "Could not remove the container of a failed spawn %s: %s", self.object_name, e
                )
                if await self.docker_call(self.engine.holds_gpus, container_id):
                    self._shared.reconciler.removals[container_id] = self.server_key
                    return
            self._shared.reconciler.removals.pop(container_id, None)
        self._release()

    async def _ensure_network(self):
        if self.network_name == "host" or (
            self.network_name in BUILTIN_NETWORKS and not self.require_isolated_network
        ):
            return  # host: the documented opt-in for trusted single-user hosts
        # checked once per NETWORK_CHECK_SECONDS, not on every start of a burst; a failed start
        # checks again
        now = asyncio.get_running_loop().time()
        if (
            now - self._shared.networks_checked.get(self.network_name, float("-inf"))
            < NETWORK_CHECK_SECONDS
        ):
            return
        ensure = functools.partial(
            ensure_network,
            name=self.network_name,
            internal=self.network_internal,
            subnet=self.network_subnet,
            require_isolated=self.require_isolated_network,
        )
        try:
            await self.docker_call(ensure)
        except NetworkError as e:
            self.log.error("%s", e)
            raise SpawnRefused(
                500, "The network for user servers is misconfigured; tell the admin."
            ) from None
        self._shared.networks_checked[self.network_name] = now

    async def _preflight_image(self, image):
        """Refuse, before anything is created or held, an image that is missing or cannot run a hub
        server."""
        status = await self.docker_call(images.inspect_readiness, image, self._shared.probed_images)
        if not status.present and self.pull_policy in ("ifnotpresent", "always"):
            self._event(f"Pulling {image}", 5)
            try:
                await self.pull_image(image)
            except Exception as e:
                raise SpawnRefused(
                    400,
                    f"Image {image} is not on this server and could not be pulled "
                    f"({str(e)[:200]}). "
                    f"An admin can build it offline with: {images.build_command(image)}, or copy "
                    f"it here with "
                    "docker load.",
                ) from None
            status = await self.docker_call(
                images.inspect_readiness, image, self._shared.probed_images
            )
        if not status.present:
            raise SpawnRefused(
                400,
                f"Image {image} is not on this server (pull_policy={self.pull_policy}). An admin "
                f"can copy it "
                f"here with docker load, or build a hub-ready image with: "
                f"{images.build_command(image)}",
            )
        if not status.ready:
            raise SpawnRefused(
                400,
                f"Image {image} cannot run a JupyterHub server (no jupyterhub-singleuser). An "
                f"admin can make "
                f"it ready with: {images.build_command(image)}",
            )
        hub_version = images.hub_jupyterhub_version()
        if images.version_mismatch(status.jupyterhub_version, hub_version):
            self._event(
                f"Warning: {image} carries JupyterHub {status.jupyterhub_version}, the hub runs "
                f"{hub_version}; "
                "rebuild it with build-image if the server misbehaves",
                5,
            )

    async def _wait_until_answering(self, ip, port):
        if not self.ready_poll_interval:
            return
        try:
            await wait_until_answering(
                ip,
                port,
                f"{self.server.base_url}api",
                timeout=self.http_timeout,
                interval=self.ready_poll_interval,
                exited=lambda: self.docker_call(self.engine.exit_info, self.object_id),
            )
        except ServerExited as e:
            self.log.error(
                "Container %s stopped while starting (%s). Its last output:\n%s",
                self.object_name,
                e,
                e.output.rstrip() or "(none)",
            )
            mem_limit = self._plan.mem_limit if self._plan else self.mem_limit
            hint = (
                f" Its memory limit is {format_size(mem_limit)}."
                if e.oom_killed and mem_limit
                else ""
            )
            raise SpawnRefused(
                500,
                f"Your server stopped while starting ({e}).{hint} Try again; if it keeps "
                f"happening, tell the "
                "admin the time of this attempt.",
            ) from None

    async def _check_course_data(self, course: Course, host_home: str):
        # Docker keys binds by host path: a course mount of an admin volume's path would replace it
        # (or make it read-write), and one onto an admin volume's or the home's target would hide it
        admin_binds = dict(DockerSpawner.volume_binds.fget(self))
        admin_binds[host_home] = {"bind": self._container_home(), "mode": "rw"}
        clashes = await self._blocking(conflicting_mounts, course.mounts, admin_binds)
        if clashes:
            for clash in clashes:
                self.log.error("course %s: %s", course.id, clash)
            raise SpawnRefused(
                500,
                f"The data mounts of {course.title} clash with the server's own volumes; tell the "
                f"admin.",
            )
        # the catalog checked each source (resolved) against the data roots when the file changed; a
        # directory someone replaced by a symlink since (a course writes into its data) would lead
        # Docker elsewhere
        moved = [
            m for m in course.mounts if await self._blocking(os.path.realpath, m.source) != m.source
        ]
        if moved:
            self.log.error(
                "course %s: mount sources are symlinks now: %s",
                course.id,
                [m.source for m in moved],
            )
            raise SpawnRefused(
                500,
                f"The course data for {course.title} ({moved[0].target}) changed on the server; "
                f"tell your "
                "instructor.",
            )
        missing = [m for m in course.mounts if not await self._blocking(os.path.isdir, m.source)]
        if missing:
            self.log.error(
                "course %s: mount sources missing: %s", course.id, [m.source for m in missing]
            )
            raise SpawnRefused(
                500,
                f"The course data for {course.title} ({missing[0].target}) is not available on "
                f"this server; "
                "tell your instructor.",
            )

    def _reserve_port(self) -> int:
        for _ in range(100):
            port = random_port()
            if port not in self._shared.ports:
                self._shared.ports.add(port)
                return port
        raise SpawnRefused(500, "No free port for the server")

    def _release(self):
        self.allocator.release(*self.server_key)
        if self.network_name == "host":
            self._shared.ports.discard(self.port)

    async def _remove_outdated_container(self):
        """A kept container (remove=False) is reused only when it carries exactly this
        assignment."""
        if self.remove:
            return  # DockerSpawner removes any leftover container itself
        obj = await self.get_object()
        if not obj:
            return
        if GPUAssignment.from_labels(obj["Config"].get("Labels") or {}) != self._assignment:
            self.log.info(
                "Removing %s: its image or GPUs differ from this request", self.object_name
            )
            await self.remove_object()
            self.object_id = ""
        elif self.network_name == "host":
            # the kept container still listens where it was created to listen
            env = dict(item.split("=", 1) for item in obj["Config"].get("Env") or [] if "=" in item)
            port = urlparse(env.get("JUPYTERHUB_SERVICE_URL", "")).port
            if port:
                self._shared.ports.discard(self.port)
                self._shared.ports.add(port)
                self.port = port

    async def create_object(self):
        """DockerSpawner's create, rendered from this start's plan. The admin's extra_create_kwargs
        and extra_host_config are read now (a pre_spawn_hook may have changed them) and merged under
        the plan."""
        self._event(f"Creating container from {self.image}", 30)
        create, host, warnings = docker_create_kwargs(
            self._plan,
            name=self.container_name,
            command=await self.get_command(),
            port=self.port,
            network=self.network_name,
            admin_create=await self._admin_value(self.extra_create_kwargs),
            admin_host=await self._admin_value(self.extra_host_config),
            use_internal_ip=self.use_internal_ip,
            host_ip=self.host_ip,
            links=self.links,
            mounts=self.mount_binds,
        )
        for warning in warnings:
            self.log.warning(warning)
        create.setdefault("host_config", {}).update(self.client.create_host_config(**host))
        return await self.docker("create_container", **create)

    async def start_object(self):
        self._event("Starting container", 60)
        await super().start_object()
        self._event("Container started; waiting for Jupyter to answer", 80)

    async def get_ip_and_port(self):
        if self.network_name == "host":
            return self.ip, self.port
        return await super().get_ip_and_port()

    async def remove_object(self):
        # forced: DockerSpawner's removal swallows HTTP 409, which is also Docker's "cannot remove a
        # running container", so a failed start could free GPUs its container still uses
        self.log.info("Removing container %s", self.object_id[:12])
        await self.docker_call(self.engine.remove, self.object_id)

    async def _object_status(self):
        """DockerSpawner's poll of the container: None while it runs."""
        return await super().poll()

    async def poll(self):
        try:
            await self._ensure_reconciled()
            status = await self._object_status()
        except Exception as e:
            # Docker does not answer (dockerd restarting at 3 a.m.; live-restore keeps containers
            # up): "stopped" would make JupyterHub forget a server that may well run and queue its
            # container for removal. Unknown counts as running: at hub start JupyterHub then checks
            # the server over HTTP, later it polls again.
            if not self._docker_unanswered:
                self.log.warning(
                    "%s: Docker does not answer (%s); assuming the server still runs",
                    self._log_name,
                    engine_error_text(e),
                )
            self._docker_unanswered = True
            return None
        self._docker_unanswered = False
        key = self.server_key
        if (
            status is not None
            and key not in self._shared.reconciler.starting
            and self.object_id not in self._shared.reconciler.removals
        ):
            # stopped by itself (Lab's Shut Down, a crash, OOM, docker kill/rm): JupyterHub now
            # calls clear_state() without stop(), and that is where the GPUs come back, once Docker
            # says so for sure (DockerSpawner also reports "stopped" for a container still "created"
            # or when Docker answers HTTP 500)
            ended = await self.docker_call(self.engine.ended, self.object_id or self.object_name)
            self._stop_confirmed = ended is not None
            self._end_reason = self._end_reason or ended or ""
        return status

    async def stop(self, now=False):
        self._shared.reconciler.stopping.add(self.server_key)
        try:
            await self._stop()
        finally:
            self._shared.reconciler.stopping.discard(self.server_key)

    async def _settle_create(self):
        """Wait for a create still running for this server (GPUSwarmSpawner: a service starts once
        created)."""

    async def _stop(self):
        await self._settle_create()
        if not self.object_id and self.engine.kind == "service":
            # a start cancelled during create_service: the service may exist and run; Docker takes
            # its name too
            self.object_id = self.object_name
        container_id = self.object_id
        if container_id:
            try:
                await self.stop_object()
                if self.remove:
                    await self.remove_object()
                    self.object_id = ""
                self._shared.reconciler.removals.pop(container_id, None)
            except Exception as e:
                if await self.docker_call(self.engine.holds_gpus, container_id):
                    # the hub forgets this server either way (clear_state follows); the GPUs stay
                    # held until the reconcile has removed the container
                    self._shared.reconciler.removals[container_id] = self.server_key
                    self.log.error(
                        "Could not stop %s (%s); it may still run, so its GPUs stay reserved until "
                        "the "
                        "reconcile removes it",
                        self.object_name,
                        e,
                    )
                    raise SpawnRefused(
                        500,
                        "Your server could not be stopped cleanly; its GPUs are released as "
                        "soon as it is gone.",
                    ) from None
                self.object_id = ""
        self._stop_confirmed = True
        self._end_reason = self._end_reason or "stopped"
        self.clear_state()

    # ---- container spec --------------------------------------------------------------------------
    async def _admin_value(self, value):
        value = self._eval_if_callable(value)
        if inspect.isawaitable(value):
            value = await value
        return self._render_templates(dict(value or {}))

    def _make_plan(self) -> ContainerPlan:
        hardening = Hardening(
            pids_limit=self.pids_limit,
            ulimits=tuple(sorted(self.ulimits.items())),
            cap_add=tuple(self.cap_add),
            no_new_privileges=self.no_new_privileges,
        )
        admin = AdminSettings(
            mem_limit=self.mem_limit,
            cpu_limit=self.cpu_limit,
            shm_size=self.shm_size,
            hardening=hardening,
            environment_names=frozenset(self.environment),
            binds=tuple(
                Bind(source, b["bind"], b.get("mode", "rw"))
                for source, b in self.volume_binds.items()
            ),
        )
        simulated = os.path.realpath(self.simulated_gpus) if self._simulated_env else ""
        plan = plan_container(
            assignment=self._assignment,
            image=self.image,
            uid=self._identity.uid,
            gid=self._identity.gid,
            base_env=super().get_env(),
            admin=admin,
            course=self._course,
            host_home=self._host_home,
            home=self._container_home(),
            notice_dir=self._notice_dir,
            notice_file=NOTICE_FILE,
            simulated_file=simulated,
            simulated_env=self._simulated_env,
        )
        if plan.ignored_env:
            self.log.warning(
                "%s: ignoring %s in Spawner.environment: set by the spawner only",
                self._log_name,
                ", ".join(plan.ignored_env),
            )
        return plan

    def get_env(self):
        return self._plan.env_dict() if self._plan is not None else super().get_env()

    # ---- state -----------------------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        if self._assignment is not None:
            state["gpuspawn"] = {
                **self._assignment.to_state(),
                "image": self.image,
                "uid": self._identity.uid if self._identity else None,
                "gid": self._identity.gid if self._identity else None,
                "started": self._started_epoch or None,
                "notices": bool(self._notice_dir),
            }
            if self._kept_rules is not None:
                state["gpuspawn"]["course_rules"] = dict(self._kept_rules)
        if self._reclaimed:
            # outlives clear_state: for the next spawn page
            state["gpuspawn_reclaimed"] = dict(self._reclaimed)
        return state

    def load_state(self, state):
        data = state.get("gpuspawn")
        if data and data.get("image"):
            # before DockerSpawner's state: setting the image re-renders object_name, which the
            # state then fixes
            self.image = data["image"]
        super().load_state(state)
        reclaimed = state.get("gpuspawn_reclaimed")
        if isinstance(reclaimed, dict) and isinstance(reclaimed.get("message"), str):
            self._reclaimed = {"at": reclaimed.get("at"), "message": reclaimed["message"]}
        if not data:
            return
        self._assignment = GPUAssignment.from_state(self.user.name, self.name or "", data)
        if data.get("uid") is not None:
            self._identity = homes.Identity(int(data["uid"]), int(data["gid"]), "state")
        self._started_epoch = float(data.get("started") or time.time())
        # absent for a server started before they were kept: judged as before (spawner settings)
        rules = data.get("course_rules")
        self._kept_rules = dict(rules) if isinstance(rules, dict) else None
        if data.get("notices") and self._assignment.gpus:
            # a hub restart: the reclaimer watches this server again, warning it through the same
            # directory
            self._notice_dir = notice_dir(self.runtime_dir, self.server_key)
            self._shared.reclaimer.register(self, self._notice_dir)

    def clear_state(self):
        key, container_id = self.server_key, self.object_id
        super().clear_state()
        if getattr(self, "_stop_confirmed", False):
            self._release()
            if self._assignment is not None and self._assignment.gpus:
                self._records().later(
                    UsageDB.close, key[0], key[1], self._end_reason or "stopped", time.time()
                )
            if self.remove and container_id:
                # it stopped by itself: the reconcile removes what is left of it
                self._shared.reconciler.removals.setdefault(container_id, key)
        elif (
            getattr(self, "_stop_pending", False)
            and container_id
            and key not in self._shared.reconciler.starting
        ):
            # JupyterHub is forgetting this server (its stop or its poll failed): nothing else would
            # ever stop the container, which keeps its GPUs until the reconcile has removed it
            self._shared.reconciler.removals[container_id] = key
            self.log.warning(
                "%s: Docker did not confirm its container %s stopped; its GPUs stay held until the "
                "reconcile has removed it",
                self._log_name,
                container_id[:12],
            )
        # _stop_confirmed stays until the next start: JupyterHub calls clear_state again after
        # stop(), and a kept container (remove=False) that stopped cleanly must not then be queued
        # for removal
        self._assignment = None
        self._plan = None
        self._course = None
        self._kept_rules, self._kept_rules_noted = None, False
        if getattr(self, "_notice_dir", ""):
            self._shared.reclaimer.unregister(key, self._notice_dir)
            self._notice_dir = ""
