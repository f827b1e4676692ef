"""Why a pending job waits and until when, in users' words.

One wording for every place that shows a queued job: the spawner's progress page, Ray
clusters and apps. It lives in the core (not the hub side) so that code running in a user's
kernel words a pending job without importing JupyterHub.

Slurm's accounting reasons (``AssocGrpCPUMinutesLimit``, ``QOSMaxGRESPerUser``...) follow a
grammar: a scope (``Assoc``/``QOS``), a kind (``Grp`` for the whole project or QoS, ``Max`` for
one job, node or user), a TRES (``Cpu``, ``GRES``, ``Mem``, ``Node``, ``Billing``...) and a
measure (plain: held at once; ``Minutes``: the allocation; ``RunMinutes``: held by running
jobs). :func:`describe_reason` reads that grammar, so every reason of Slurm 22.05
(``libslurmfull``'s list) gets words that say what to do, not only the few spelled out in
:data:`PENDING_REASONS`.
"""

from __future__ import annotations

import re
from datetime import datetime

from shopfloor.slurm.seam import JobInfo
from shopfloor.timeutil import format_minutes

#: Slurm's pending reasons in users' words (``{partition}``, ``{project}``, ``{qos}`` filled
#: in). Accounting reasons not listed here are worded by :func:`describe_reason`'s grammar.
PENDING_REASONS = {
    "Resources": "waiting for free resources on the {partition} partition",
    "Priority": "other jobs are ahead of yours in the queue",
    "ReqNodeNotAvail": "the nodes it needs are unavailable (down, drained or reserved)",
    "Reservation": "waiting for its reservation to start",
    "Dependency": "waiting for another job to finish",
    "BeginTime": "waiting for its start time",
    "PartitionDown": "the {partition} partition is down",
    "PartitionNodeLimit": "it asks for more nodes than the {partition} partition has",
    "PartitionTimeLimit": "it asks for more time than the {partition} partition allows",
    "QOSMaxJobsPerUserLimit": "you already run as many jobs as the {qos} allows one user; it "
                              "starts when one of them ends (or stop one)",
    "QOSMaxSubmitJobPerUserLimit": "you have as many jobs queued as the {qos} allows one user; "
                                   "stop one to make room",
    "AssocMaxJobsLimit": "you already run as many jobs as {project} allows you at once; it "
                         "starts when one of them ends (or stop one)",
    "AssocGrpJobsLimit": "{project} already runs as many jobs as it may at once; it starts "
                         "when one of them ends",
    "AssocMaxSubmitJobLimit": "you have as many jobs queued in {project} as you may; stop one "
                              "to make room",
    "AssocGrpSubmitJobsLimit": "{project} has as many jobs queued as it may; it starts when "
                               "others end",
    "AssocGrpWallLimit": "the {project} budget of wall time is used up: ask your project lead "
                         "to add time, or stop this and choose another account",
    "AssocMaxWallDurationPerJobLimit": "it asks for a longer walltime than {project} allows "
                                       "one job, so it can never start: stop it and ask for "
                                       "less time",
    "QOSMaxWallDurationPerJobLimit": "it asks for a longer walltime than the {qos} allows one "
                                     "job, so it can never start: stop it and ask for less time",
    "AssociationJobLimit": "{project} already runs as many jobs as it may; it starts when one "
                           "of them ends",
    "AssociationResourceLimit": "{project} already holds as much as it may at once; it starts "
                                "when other jobs end",
    "AssociationTimeLimit": "the {project} budget is used up: ask your project lead to add "
                            "time, or stop this and choose another account",
    "QOSJobLimit": "the {qos} already runs as many jobs as it may; it starts when one ends",
    "QOSGrpJobsLimit": "the {qos} already runs as many jobs as it may at once; it starts when "
                       "one of them ends",
    "QOSGrpSubmitJobsLimit": "the {qos} has as many jobs queued as it may; it starts when "
                             "others end",
    "QOSGrpWallLimit": "the {qos} has used up its wall time: stop this and choose another "
                       "QoS, or ask your admin",
    "QOSResourceLimit": "the {qos} already holds as much as it may at once; it starts when "
                        "other jobs end",
    "QOSTimeLimit": "the {qos} has used up its time; stop this and choose another QoS, or ask "
                    "your admin",
    "QOSUsageThreshold": "the {qos} has used up its share for now; it starts later",
    "InvalidAccount": "{project} cannot be charged (it or your membership no longer exists): "
                      "stop it and choose another account",
    "AccountNotAllowed": "the {partition} partition does not accept {project}: stop it and "
                         "choose another account",
    "InvalidQOS": "the {qos} is not one you may use: stop it and choose another QoS",
    "QOSNotAllowed": "the {partition} partition does not accept the {qos}: stop it and choose "
                     "another QoS",
    "JobHeldAdmin": "an administrator is holding it",
    "JobHeldUser": "it is held",
    "None": "it was just submitted",
}

#: Slurm's TRES spellings inside reason names, in users' words.
_TRES_WORDS = {
    "Cpu": "CPUs", "CPU": "CPUs", "GRES": "GPUs", "Mem": "memory", "Memory": "memory",
    "Node": "nodes", "Billing": "billed resources", "Energy": "energy", "License": "licenses",
    "BB": "burst buffer", "Unknown": "resources",
}
_ACCOUNTING = re.compile(
    r"^(?P<scope>Assoc|QOS)(?P<kind>Grp|Max|Min)(?P<tres>Cpu|CPU|GRES|Mem|Memory|Node|Billing|"
    r"Energy|License|BB|Unknown)(?P<measure>RunMinutes|Minutes|)(?P<per>PerJob|PerNode|"
    r"PerUser|NotSatisfied|)(?:Limit)?$"
)


def describe_reason(reason: str, *, partition: str = "", account: str | None = None,
                    qos: str | None = None) -> str:
    """Slurm's pending ``reason`` in users' words, saying what to do where there is something
    to do. ``account`` and ``qos`` (the job's, when the caller knows them) name the project
    and QoS in the sentence; an unknown reason is returned as Slurm wrote it."""
    project = f"the {account} project" if account else "your project"
    names = {"partition": partition or "its", "project": project,
             "qos": f"{qos} QoS" if qos else "QoS"}
    if reason in PENDING_REASONS:
        return PENDING_REASONS[reason].format(**names)
    match = _ACCOUNTING.match(reason)
    if not match:
        return reason
    scope, kind, measure, per = (match["scope"], match["kind"], match["measure"], match["per"])
    what = _TRES_WORDS[match["tres"]]
    owner = project if scope == "Assoc" else f"the {names['qos']}"
    if kind == "Min":
        return f"it asks for fewer {what} than the {names['qos']} requires: stop it and ask " \
               "for more, or choose another QoS"
    if kind == "Max" and per == "PerUser":
        return f"you already use as many {what} as the {names['qos']} allows one user at " \
               "once; it starts when your other jobs end (or stop one)"
    if kind == "Max":
        unit = "one node" if per == "PerNode" else "one job"
        fix = "choose another QoS" if scope == "QOS" else "choose another account"
        amount = f"{_singular(what)} time" if measure else what
        return f"it asks for more {amount} than {owner} allows {unit}, so it can never " \
               f"start: stop it and ask for less, or {fix}"
    if measure == "Minutes":
        budget = f"the {account} budget" if scope == "Assoc" and account else (
            "your project's budget" if scope == "Assoc" else f"the {names['qos']}'s budget")
        lead = "your project lead" if scope == "Assoc" else "your admin"
        return f"{budget} of {_singular(what)} time is used up: ask {lead} to add time, " \
               f"or stop this and choose another {'account' if scope == 'Assoc' else 'QoS'}"
    if measure == "RunMinutes":
        return f"{owner}'s running jobs already hold as much {_singular(what)} time as it " \
               "may have in flight; it starts when some of them end"
    return f"{owner} already uses as many {what} as it may at once; it starts when other " \
           "jobs end"


def _singular(what: str) -> str:
    return {"CPUs": "CPU", "GPUs": "GPU", "nodes": "node"}.get(what, what)


def describe_pending(info: JobInfo, position: int | None, now: datetime | None = None, *,
                     account: str | None = None, qos: str | None = None) -> str:
    """One sentence on why a job waits and until when, for the pending page.

    ``account`` and ``qos`` are the job's (from its validated request) where the caller
    knows them: accounting reasons then name the project whose budget or limit holds it."""
    reason = describe_reason(info.reason, partition=info.partition, account=account, qos=qos)
    text = f"Queued on {info.partition}: {reason}"
    if position:
        text += f"; position {position} in the queue"
    if info.start is not None:
        now = now or datetime.now()
        wait = (info.start - now).total_seconds()
        if wait > 60:
            eta = format_minutes(int(wait // 60))
            text += f"; expected to start around {info.start:%H:%M} (in {eta})"
        else:
            text += "; expected to start within a minute"
    return text + "."


__all__ = ["PENDING_REASONS", "describe_pending", "describe_reason"]
