"""The whole driver API of llmos: every hook a plugin can implement.

A driver plugin is a Python module (or package) with functions marked
``@hookimpl`` whose names are the hooks below. It is loaded from one of:

* the bundled drivers in ``plugins/`` (importable as ``llmos_plugins.NAME``),
* an installed package's entry point in the group ``llmos_shell``,
* a single ``.py`` file in the plugins folder (``$LLMOS_HOME/plugins`` or ``--plugins-dir``).

A minimal driver::

    from llmos_shell import hookimpl

    def shout(text: str) -> str:
        '''Return the text in capitals.

        Args:
            text: What to shout.
        '''
        return text.upper()

    @hookimpl
    def register_syscalls(register):
        register(shout)

``llmos plugins new NAME`` writes a package like this with a passing test;
``llmos plugins new NAME --single-file`` writes one file into the plugins folder.

Syscalls
    A syscall is a typed function with a docstring (see :func:`register_syscalls`).
    It returns something JSON-serialisable (a ``str``, or a ``dict`` of facts,
    is what the model reads best). A parameter named ``ctx`` receives a
    :class:`SyscallContext`, the narrow handle a driver gets of the machine:

    * ``ctx.fs`` — the SQLite filesystem: ``read(path) -> bytes``,
      ``read_text(path)``, ``write(path, data, mime=None)``, ``exists``, ``stat``.
      Drivers work on these paths, never on host files.
    * ``ctx.cpu`` — the shared model: ``chat(messages, max_tokens=, temperature=,
      stop=, cancel=ctx.cancel) -> str``, ``count_tokens(text)``, ``n_ctx``. Calls
      queue on the kernel's single CPU worker; never load a second model. The
      first access loads the model and raises :class:`~llmos_shell.errors.LlmosError`
      when none can load: catch it if the driver has another way.
    * ``ctx.cancel`` — a ``threading.Event`` set on Ctrl-C or at the call's time-out:
      check it in long loops and raise :class:`~llmos_shell.errors.Cancelled`.
    * ``ctx.progress(done, total=None, message=None)`` — say how far a long call has got
      (see :meth:`SyscallContext.progress`): the shell draws a bar, ``llmos call`` a bar on
      stderr at a terminal, and the MCP server sends ``notifications/progress`` to a client
      that asked for them. A call that takes more than a few seconds should report.
    * ``ctx.config`` — settings (``home``, ``model``); ``ctx.pid`` — the calling process.

    Every call, the model's or one made by hand (``llmos call``, the shell's
    ``call``), goes through one gate (:mod:`llmos_shell.gate`): arguments checked
    against the schema, the approval policy, the time-out with the
    :func:`call_syscall` wrappers inside it, and a record in the audit log.

Errors
    Raise :class:`~llmos_shell.errors.UsageError` for bad arguments and
    :class:`~llmos_shell.errors.LlmosError` for anything else the user should
    read: one line that says what to do. Whatever a syscall raises goes back
    to the model as the call's result and into the audit log; it never stops
    the kernel. A plugin that fails to import, has a hook whose signature does
    not match the spec below, or raises in :func:`register_syscalls` or
    :func:`startup` is listed as broken by ``llmos drivers`` with its error,
    and the other plugins load as usual.

Backends
    The bundled drivers choose a backend with an environment variable
    (``LLMOS_TRANSLATE_BACKEND=auto|cpu|apertium`` ...) and report it through
    :func:`driver_status`; do the same with :mod:`llmos_shell.toolkit`
    (``backend_setting``, ``Backend``, ``usable``), and say how to install what
    is missing.

Testing
    :mod:`llmos_shell.testing` has ``make_system(tmp_path, plugins=["my_module"],
    strict=True)``, a scripted :class:`~llmos_shell.testing.FakeCpu` and
    ``small_cpu()``, a real 135M model for tests that need one.

Set ``LLMOS_TRACE=1`` to log every hook call to stderr.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from llmos_shell.gate import Approval
    from llmos_shell.syscalls import Syscall

PROJECT = "llmos_shell"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass
class DriverStatus:
    """What ``llmos drivers`` shows for one driver.

    ``ok`` False means the driver is unavailable; ``detail`` then says why and
    how to install what is missing (one line).
    """

    name: str
    ok: bool
    backend: str = ""
    detail: str = ""


class Machine:
    """What drivers and hooks may use of a running llmos, and nothing more.

    * ``fs`` — the SQLite filesystem (opened on first use);
    * ``cpu`` — the shared model; calls queue on the kernel's single CPU worker.
      The first use loads it, and raises :class:`~llmos_shell.errors.LlmosError`
      when no model can load;
    * ``config`` — settings (``home``, ``model``, ``syscall_timeout``);
    * ``cpu_status()`` — ``(ok, detail)``: can the CPU run, checked without loading it.

    The ``startup`` and ``driver_status`` hooks get one as ``system``; a syscall
    reaches it through its :class:`SyscallContext`.
    """

    def __init__(self, *, config: Any, fs: Callable[[], Any], cpu: Callable[[], Any],
                 cpu_status: Callable[[], tuple[bool, str]]) -> None:
        self.config = config
        self._open_fs, self._load_cpu, self._cpu_status = fs, cpu, cpu_status

    @property
    def fs(self) -> Any:
        return self._open_fs()

    @property
    def cpu(self) -> Any:
        return self._load_cpu()

    def cpu_status(self) -> tuple[bool, str]:
        return self._cpu_status()


@dataclass
class SyscallContext:
    """What a running syscall reaches besides its arguments (its ``ctx`` parameter).

    ``fs``, ``cpu`` and ``config`` are the :class:`Machine`'s; ``pid`` is the calling
    process (None for a call by hand); ``cancel`` is set on Ctrl-C or a time-out:
    long syscalls check it and raise :class:`~llmos_shell.errors.Cancelled`; ``progress()``
    tells the caller how far a long call has got.
    """

    machine: Machine | None = None
    pid: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    #: Where :meth:`progress` goes: ``on_progress(done, total, message)``, set by whoever made
    #: the call (the shell, ``llmos call``, the MCP server); None shows nothing.
    on_progress: Callable[[float, float | None, str | None], None] | None = None

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report how far this call has got: ``done`` of ``total`` units (model calls, pages, bytes:
        the driver's choice, the same all through one call), and what it is doing now.

        ``done`` never goes down; ``total`` may be None while unknown and may grow (a second round
        of chunks); report ``done == total`` when the work is over. ``message`` is one short line
        ("summarising part 2 of 3"). Cheap to call from the syscall's own thread, as often as once a
        second; a display that fails is logged and never fails the call.

        Example::

            for number, page in enumerate(pages, 1):
                ctx.progress(number - 1, len(pages), f"reading page {number} of {len(pages)}")
                read(page)
            ctx.progress(len(pages), len(pages), "done")
        """
        if self.on_progress is None:
            return
        try:
            self.on_progress(done, total, message)
        except Exception:  # a broken display is no reason to fail the work
            import logging

            logging.getLogger("llmos.progress").exception("progress display failed")

    def _part(self, name: str) -> Any:
        if self.machine is None:
            from llmos_shell.errors import LlmosError

            raise LlmosError(f"this call has no {name}: it was made outside a running llmos")
        return getattr(self.machine, name)

    @property
    def fs(self) -> Any:
        return self._part("fs")

    @property
    def cpu(self) -> Any:
        return self._part("cpu")

    @property
    def config(self) -> Any:
        return self._part("config")


@dataclass
class SyscallCall:
    """One call about to run: what wrappers of :func:`call_syscall` see.

    ``arguments`` are checked against the syscall's schema (defaults filled in) by the
    time a plugin's wrapper runs; ``approval`` is the policy the call was made under.
    """

    syscall: "Syscall"
    arguments: dict[str, Any]
    ctx: SyscallContext
    approval: "Approval | None" = None


@hookspec
def register_syscalls(register: Callable[..., None]) -> None:
    """Register this plugin's syscalls.

    Call ``register(function, name=None, capabilities=(), examples=(), output=None,
    timeout=None, reads=(), input=None, parameters=None, description=None, from_request=None,
    places=())`` once per syscall.
    ``function`` is a typed function with a docstring: its JSON schema comes from
    the signature (``str``, ``int``, ``float``, ``bool``, ``list[X]``, ``Literal[...]``
    enums, defaults) and the docstring's ``Args:`` section (descriptions). A
    parameter named ``ctx`` receives a :class:`SyscallContext`
    (``ctx.fs``, ``ctx.cpu``, ``ctx.pid``, ``ctx.cancel``) and is hidden from the model.
    ``capabilities`` are names from :data:`llmos_shell.syscalls.CAPABILITIES`
    (``reads_fs``, ``writes_fs``, ``irreversible``, ``uses_cpu``, ``audio_out``,
    ``reads_host``, ``read_only``); the kernel's approval policy uses them. ``reads_fs`` and
    ``writes_fs`` also make it a file syscall, the kind the kernel offers when a request names a
    file: a syscall that reads other stored data (``recall`` searches the conversation's
    earlier messages) declares ``read_only`` instead.

    ``examples`` are a few requests as a user would type them that this syscall
    serves ("Translate 'good morning' into German"): the kernel's router compares
    each request with them to choose the syscalls a request needs. ``output`` says
    what of the result the user sees as the reply, the way a command prints its
    output: a key of a dict result (``"translation"``), ``"*"`` for the whole
    result as a person reads it (a dict of one field is that field, another dict a line per
    field: the MCP bridge gives each tool this), or None (the default) when the result is data
    the model answers from (a file read to answer a question about it). A result whose output field is
    empty (None, "", []) has nothing to show: the model replies to the request as
    if the syscall had not run (``recall`` that found nothing). A dict result may carry
    ``unsure``: a short reason its output may be wrong ("Apertium did not know 'whats'"); the
    kernel tells the user after the reply, and never pipes it to a next step. ``timeout`` is how many seconds a
    call may take before the kernel cuts it off (None: the configured default).
    ``reads`` lists the kinds of file (MIME patterns: ``"image/*"``, ``"text/*"``,
    ``"inode/directory"``) that the syscall's ``path`` parameter takes: when a
    request names a file, the kernel runs a syscall that reads that kind first.
    ``input`` names the parameter that takes the previous step's output, as a
    command reads a pipe: in "read the sign and translate it", the OCR text goes
    to translate's ``text`` (``input="text"``). ``from_request`` is a function that reads
    argument values from the user's request as they said them and returns them as a dict
    (``"how do you say 'hi' in Catalan?"`` -> ``{"target_lang": "ca"}``; ``{}`` when the request
    says none): when the kernel plans a call of this syscall for a request, it sets these values
    itself and the model decodes only the rest. Use it for values a fixed phrasing gives
    away that a small model gets wrong; it must never guess.
    ``places`` are host folders (or files) the syscall's path parameters reach (``"~/data"``,
    ``"/srv/photos"``; the MCP bridge gives each tool its server's path arguments): a request
    naming a path in one, or any ``~/`` or ``/home/USER/`` path that the llmos filesystem does not
    have, is the host's, and goes to such a syscall instead of the bundled file syscalls.

    A function whose arguments another protocol describes (the MCP bridge does this for each
    tool of an MCP server) passes ``parameters=`` (a JSON Schema of an object) and
    ``description=`` instead of a signature and a docstring; it is called with the validated
    arguments as keywords (and ``ctx=`` if it has a ``ctx`` parameter). A name may then be
    ``server.tool``.

    Raising here marks the plugin broken; the other plugins still load.

    Example::

        @hookimpl
        def register_syscalls(register):
            register(delete_file, capabilities=["writes_fs", "irreversible"],
                     examples=["Delete /notes/old.txt"], output="deleted")
    """


@hookspec
def driver_status(system: Machine) -> list[DriverStatus] | DriverStatus | None:
    """Report whether this plugin's drivers can work on this machine.

    Called by ``llmos drivers``. Return one :class:`DriverStatus` per driver (a
    list, or a single one): ``ok=True`` with the backend in use, or ``ok=False``
    with why and how to install it. Check cheaply (import, ``shutil.which``);
    don't load models here. Plugins without backends need not implement it.
    Raising :class:`~llmos_shell.errors.UsageError` (a bad backend setting) shows
    the driver as unavailable with that message; anything else marks it broken.

    Example::

        @hookimpl
        def driver_status(system):
            if shutil.which("espeak-ng"):
                return DriverStatus("speech", True, backend="espeak-ng")
            return DriverStatus("speech", False, detail="apt-get install espeak-ng")
    """


@hookspec(firstresult=True)
def call_syscall(call: SyscallCall) -> Any:
    """Run one syscall and return its result (JSON-serialisable, or bytes/str).

    Plugins only wrap this hook, with ``@hookimpl(wrapper=True)`` (or old-style
    ``hookwrapper=True``), to time or veto calls. A wrapper ``yield``s to get the
    result (or the exception, re-raised at the ``yield``) and returns what the kernel
    should see. Raise :class:`llmos_shell.errors.Denied` before yielding to refuse the call.

    The gate (:mod:`llmos_shell.gate`) runs the hook itself, and its order does not depend
    on pluggy's: by the time any wrapper runs, ``tryfirst`` or not, the arguments have
    been validated and the approval policy applied; the wrappers run under the call's
    time-out and cancel; whatever they return or raise is written to the audit log.
    The one plain implementation is llmos's own, which calls the driver's function.
    A plugin with a plain (non-wrapper) ``call_syscall`` is refused at load and listed
    broken by ``llmos drivers``: it would take calls from their drivers.

    ``firstresult``: the first non-None result wins.

    Example::

        @hookimpl(wrapper=True)
        def call_syscall(call):
            started = time.monotonic()
            try:
                return (yield)
            finally:
                log.info("%s took %.1f ms", call.syscall.name, 1000 * (time.monotonic() - started))
    """


@hookspec
def startup(system: Machine) -> None:
    """Called once after every plugin has loaded and the filesystem is open.

    Use it to create files or directories a driver needs (``system.fs``), or to
    read settings (``system.config``). Don't load models here: it runs before
    the shell's prompt appears. Raising marks the plugin broken.

    Example::

        @hookimpl
        def startup(system):
            system.fs.mkdir("/audio")
    """


# Used by the meta-test that every hook is documented.
HOOK_NAMES = ("register_syscalls", "driver_status", "call_syscall", "startup")


