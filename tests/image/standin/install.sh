#!/bin/sh
# Stand-in for the Ascend driver installer (driver/script/install.sh inside the .run), with its traps:
# needs HwHiAiUser; modprobes unless --force; installs for the first kernel under /lib/modules;
# runs depmod -a for the running (build host) kernel; marks the tree immutable.
set -e
here=$(cd "$(dirname "$0")/../.." && pwd)
path=/usr/local/Ascend; full=; force=; quiet=
for a in "$@"; do
  case "$a" in
    --full) full=1 ;; --force) force=1 ;; --quiet) quiet=1 ;; --install-for-all) ;;
    --install-path=*) path=${a#--install-path=} ;;
    *) echo "[ERROR] unknown option $a" >&2; exit 1 ;;
  esac
done
[ -n "$full" ] || { echo "[ERROR] only --full is supported" >&2; exit 1; }
grep -q '^HwHiAiUser:' /etc/group || { echo "[ERROR] group HwHiAiUser not exist, please add it first" >&2; exit 1; }
grep -q '^HwHiAiUser:' /etc/passwd || { echo "[ERROR] user HwHiAiUser not exist, please add it first" >&2; exit 1; }
kver=$(ls /lib/modules 2>/dev/null | head -n 1)
[ -n "$kver" ] || { echo "[ERROR] no kernel found under /lib/modules" >&2; exit 1; }
mkdir -p "$path/driver" "/lib/modules/$kver/updates"
cp -r "$here/driver/lib64" "$here/driver/include" "$here/driver/tools" "$here/driver/version.info" "$path/driver/"
cp "$here/driver/kernel/npu_standin.ko" "/lib/modules/$kver/updates/"
chown -R HwHiAiUser:HwHiAiUser "$path/driver"
printf 'UserName=HwHiAiUser\nUserGroup=HwHiAiUser\nDriver_Install_Type=full\nDriver_Install_Path_Param=%s\n' "$path" > /etc/ascend_install.info
mkdir -p /var/log/ascend_seclog && echo "install ok" > /var/log/ascend_seclog/operation.log
depmod -a 2>/dev/null || true
if [ -z "$force" ]; then
  modprobe npu_standin || { echo "[ERROR] load driver npu_standin failed" >&2; exit 1; }
fi
chattr +i "$path/driver/version.info" "$path/driver/lib64" 2>/dev/null || true
[ -n "$quiet" ] || echo "Driver package installed successfully"
