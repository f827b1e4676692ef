"""Pending sessions say why and until when, in users' words."""

from __future__ import annotations

from datetime import datetime

from shopfloor.slurm.pending import describe_pending, describe_reason
from shopfloor.slurm.seam import JobInfo


def job(reason: str, start: datetime | None) -> JobInfo:
    return JobInfo("42", "PENDING", reason, "n/a", "", start, "alice", "gpu", "x")


def test_resources_with_eta_and_position() -> None:
    text = describe_pending(job("Resources", datetime(2026, 1, 1, 10, 30)), 3,
                            now=datetime(2026, 1, 1, 9, 0))
    assert text == (
        "Queued on gpu: waiting for free resources on the gpu partition; position 3 in the "
        "queue; expected to start around 10:30 (in 1 hour 30 minutes)."
    )


def test_unavailable_nodes_and_unknown_reasons() -> None:
    assert "nodes it needs are unavailable" in describe_pending(job("ReqNodeNotAvail", None), None)
    assert describe_pending(job("SomethingNew", None), None) == "Queued on gpu: SomethingNew."


def test_start_imminent() -> None:
    now = datetime(2026, 1, 1, 9, 0)
    text = describe_pending(job("Priority", datetime(2026, 1, 1, 9, 0, 30)), 1, now=now)
    assert text.endswith("expected to start within a minute.")
    assert "other jobs are ahead of yours" in text


# -- accounting reasons: budgets, association and QoS limits ---------------------------------

#: Every Assoc*/QOS* pending reason of Slurm 22.05 (the strings of ``libslurmfull.so``'s
#: ``job_state_reason_string``), so a reason Slurm can report never reaches users raw.
SLURM_2205_ACCOUNTING_REASONS = """
AccountNotAllowed AssocGrpBB AssocGrpBBMinutes AssocGrpBBRunMinutes AssocGrpBilling
AssocGrpBillingMinutes AssocGrpBillingRunMinutes AssocGrpCPUMinutesLimit
AssocGrpCPURunMinutesLimit AssocGrpCpuLimit AssocGrpEnergy AssocGrpEnergyMinutes
AssocGrpEnergyRunMinutes AssocGrpGRES AssocGrpGRESMinutes AssocGrpGRESRunMinutes
AssocGrpJobsLimit AssocGrpLicense AssocGrpLicenseMinutes AssocGrpLicenseRunMinutes
AssocGrpMemLimit AssocGrpMemMinutes AssocGrpMemRunMinutes AssocGrpNodeLimit AssocGrpNodeMinutes
AssocGrpNodeRunMinutes AssocGrpSubmitJobsLimit AssocGrpUnknown AssocGrpUnknownMinutes
AssocGrpUnknownRunMinutes AssocGrpWallLimit AssocMaxBBMinutesPerJob AssocMaxBBPerJob
AssocMaxBBPerNode AssocMaxBillingMinutesPerJob AssocMaxBillingPerJob AssocMaxBillingPerNode
AssocMaxCpuMinutesPerJobLimit AssocMaxCpuPerJobLimit AssocMaxCpuPerNode
AssocMaxEnergyMinutesPerJob AssocMaxEnergyPerJob AssocMaxEnergyPerNode
AssocMaxGRESMinutesPerJob AssocMaxGRESPerJob AssocMaxGRESPerNode AssocMaxJobsLimit
AssocMaxLicenseMinutesPerJob AssocMaxLicensePerJob AssocMaxMemMinutesPerJob AssocMaxMemPerJob
AssocMaxMemPerNode AssocMaxNodeMinutesPerJob AssocMaxNodePerJobLimit AssocMaxSubmitJobLimit
AssocMaxUnknownMinutesPerJob AssocMaxUnknownPerJob AssocMaxUnknownPerNode
AssocMaxWallDurationPerJobLimit AssociationJobLimit AssociationResourceLimit
AssociationTimeLimit InvalidAccount InvalidQOS QOSGrpBB QOSGrpBBMinutes QOSGrpBBRunMinutes
QOSGrpBilling QOSGrpBillingMinutes QOSGrpBillingRunMinutes QOSGrpCPUMinutesLimit
QOSGrpCPURunMinutesLimit QOSGrpCpuLimit QOSGrpEnergy QOSGrpEnergyMinutes QOSGrpEnergyRunMinutes
QOSGrpGRES QOSGrpGRESMinutes QOSGrpGRESRunMinutes QOSGrpJobsLimit QOSGrpLicense
QOSGrpLicenseMinutes QOSGrpLicenseRunMinutes QOSGrpMemLimit QOSGrpMemoryMinutes
QOSGrpMemoryRunMinutes QOSGrpNodeLimit QOSGrpNodeMinutes QOSGrpNodeRunMinutes
QOSGrpSubmitJobsLimit QOSGrpUnknown QOSGrpUnknownMinutes QOSGrpUnknownRunMinutes QOSGrpWallLimit
QOSJobLimit QOSMaxBBPerJob QOSMaxBBPerNode QOSMaxBBPerUser QOSMaxBillingMinutesPerJob
QOSMaxBillingPerJob QOSMaxBillingPerNode QOSMaxBillingPerUser QOSMaxCpuMinutesPerJobLimit
QOSMaxCpuPerJobLimit QOSMaxCpuPerNode QOSMaxCpuPerUserLimit QOSMaxEnergyMinutesPerJob
QOSMaxEnergyPerJob QOSMaxEnergyPerNode QOSMaxEnergyPerUser QOSMaxGRESMinutesPerJob
QOSMaxGRESPerJob QOSMaxGRESPerNode QOSMaxGRESPerUser QOSMaxJobsPerUserLimit
QOSMaxLicenseMinutesPerJob QOSMaxLicensePerJob QOSMaxLicensePerUser QOSMaxMemoryMinutesPerJob
QOSMaxMemoryPerJob QOSMaxMemoryPerNode QOSMaxMemoryPerUser QOSMaxNodeMinutesPerJob
QOSMaxNodePerJobLimit QOSMaxNodePerUserLimit QOSMaxSubmitJobPerUserLimit
QOSMaxUnknownMinutesPerJob QOSMaxUnknownPerJob QOSMaxUnknownPerNode QOSMaxUnknownPerUser
QOSMaxWallDurationPerJobLimit QOSMinBB QOSMinBilling QOSMinCpuNotSatisfied QOSMinEnergy
QOSMinGRES QOSMinLicense QOSMinMemory QOSMinNode QOSMinUnknown QOSNotAllowed QOSResourceLimit
QOSTimeLimit QOSUsageThreshold
""".split()


def test_a_used_up_budget_names_the_project_and_says_what_to_do() -> None:
    text = describe_pending(job("AssocGrpCPUMinutesLimit", None), None, account="proj-chem")
    assert text == (
        "Queued on gpu: the proj-chem budget of CPU time is used up: ask your project lead to "
        "add time, or stop this and choose another account."
    )
    gpu = describe_reason("AssocGrpGRESMinutes", account="proj-ml")
    assert gpu.startswith("the proj-ml budget of GPU time is used up: ask your project lead")
    billing = describe_reason("AssocGrpBillingMinutes", account="proj-ml")
    assert billing.startswith("the proj-ml budget of billed resources time is used up")
    # Without the account the sentence still reads, and says whose budget.
    assert describe_reason("AssocGrpCPUMinutesLimit").startswith(
        "your project's budget of CPU time is used up")


def test_limits_held_at_once_say_the_job_starts_when_others_end() -> None:
    assert describe_reason("AssocGrpGRESRunMinutes", account="proj-ml") == (
        "the proj-ml project's running jobs already hold as much GPU time as it may have in "
        "flight; it starts when some of them end")
    assert describe_reason("AssocGrpCpuLimit", account="proj-chem") == (
        "the proj-chem project already uses as many CPUs as it may at once; it starts when "
        "other jobs end")
    assert describe_reason("AssocMaxJobsLimit", account="proj-ml").startswith(
        "you already run as many jobs as the proj-ml project allows you at once")
    assert describe_reason("QOSMaxJobsPerUserLimit", qos="debug").startswith(
        "you already run as many jobs as the debug QoS allows one user")
    assert describe_reason("QOSMaxGRESPerUser", qos="gpu") == (
        "you already use as many GPUs as the gpu QoS allows one user at once; it starts when "
        "your other jobs end (or stop one)")


def test_a_job_that_can_never_start_says_so() -> None:
    assert describe_reason("AssocMaxCpuPerJobLimit", account="proj-ml") == (
        "it asks for more CPUs than the proj-ml project allows one job, so it can never "
        "start: stop it and ask for less, or choose another account")
    assert "can never start" in describe_reason("QOSMaxGRESPerJob", qos="gpu")
    assert describe_reason("InvalidAccount", account="proj-chem").startswith(
        "the proj-chem project cannot be charged")


def test_every_accounting_reason_of_slurm_2205_gets_words() -> None:
    assert len(SLURM_2205_ACCOUNTING_REASONS) > 130
    for reason in SLURM_2205_ACCOUNTING_REASONS:
        text = describe_reason(reason, partition="cpu", account="proj-ml", qos="cpu")
        assert text != reason and reason not in text, reason
        assert "{" not in text and "  " not in text, (reason, text)
