"""Host folders that no campaign may bind-mount, whatever the deployment's mount roots say.

A bind mount of the host's kernel interfaces, devices or configuration gives whoever runs
in the container root on the host or its secrets: ``/proc`` (``/proc/1/root`` is the
host's root, ``/proc/<pid>/environ`` other processes' secrets), ``/sys``, ``/dev``,
``/etc`` (``shadow``, ``sudoers``), ``/root``, ``/boot``, ``/run`` and ``/var/run``
(daemons' sockets: Docker's, containerd's, systemd's), and the container engines' data
(``/var/lib/docker``, ``/var/lib/containerd``, LXD, libvirt, etcd, ...: other containers'
and machines' files, the cluster's secrets). Those are refused read-only too. Writable,
the system's programs and libraries (``/usr``, ``/bin``, ``/sbin``, ``/lib*``, where root's
programs load code from), the job spools (``/var/spool``: cron) and what root runs or
trusts later (the package databases' maintainer scripts and verified lists, cloud-init's
scripts, polkit's rules) are also root, so they may only be mounted read-only.

A path is refused when it lies under one of these or above one (mounting ``/var`` mounts
``/var/run``), as written and as it resolves here (``/var/run`` is ``/run``, a symlink may
lead into ``/etc``). Mount *targets* are paths inside the container and are not checked.
"""

from __future__ import annotations

import os
import posixpath

NEVER_MOUNTED = ("/proc", "/sys", "/dev", "/boot", "/etc", "/root", "/run", "/var/run",
                 "/var/lib/docker", "/var/lib/containerd", "/var/lib/containers",
                 "/var/lib/kubelet", "/var/snap/docker",
                 # other container, VM and cluster engines' data: their workloads' disks
                 # and the cluster's secrets (etcd holds every Kubernetes secret)
                 "/var/lib/lxd", "/var/lib/incus", "/var/lib/libvirt", "/var/lib/rancher",
                 "/var/lib/etcd", "/var/lib/k0s", "/var/lib/nerdctl", "/var/lib/buildkit",
                 "/var/snap/lxd", "/var/snap/microk8s")
NEVER_WRITABLE = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                  "/var/spool",
                  # what root runs or trusts later: package maintainer scripts and verified
                  # package lists and archives, cloud-init's boot scripts, polkit's rules
                  "/var/lib/dpkg", "/var/lib/rpm", "/var/lib/apt", "/var/cache/apt",
                  "/var/lib/cloud", "/var/lib/polkit-1", "/var/lib/snapd", "/snap")


def path_forms(path: str) -> set[str]:
    """The path as written (normalised) and as it resolves on this machine (symlinks)."""
    expanded = os.path.expanduser(path)
    forms = {posixpath.normpath(expanded)}
    if os.path.isabs(expanded):
        forms.add(os.path.realpath(expanded))
    return {"/" + f.lstrip("/") for f in forms}  # normpath keeps a leading '//'


def _meets(path: str, folder: str) -> bool:
    """``path`` is ``folder``, inside it, or a folder above it."""
    return (path == folder or path.startswith(folder + "/")
            or folder.startswith(path.rstrip("/") + "/"))


def host_root_problem(source: str, writable: bool) -> str | None:
    """Why bind-mounting the host path ``source`` gives root on the host, or None."""
    if not os.path.isabs(os.path.expanduser(source)):
        return None  # resolved against the campaign file first, then checked
    forms = sorted(path_forms(source))
    for folder in NEVER_MOUNTED:
        hit = next((f for f in forms if _meets(f, folder)), None)
        if hit is not None:
            where = "" if hit == source else f" (as {hit})"
            return (f"{source!r}{where} reaches the host's {folder}, which is never mounted, "
                    "even read-only: it gives root on the host or its secrets")
    if writable:
        for folder in NEVER_WRITABLE:
            hit = next((f for f in forms if _meets(f, folder)), None)
            if hit is not None:
                where = "" if hit == source else f" (as {hit})"
                return (f"{source!r}{where} reaches the host's {folder}, whose programs and "
                        "jobs root runs: it may only be mounted read-only (read_only: true)")
    return None
