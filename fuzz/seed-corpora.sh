#!/usr/bin/env bash
# Fill fuzz/corpus/<target>/ with seeds made from the unit-test fixtures
# (imaging/tests/fixtures/{part,fs}), cut to sizes libFuzzer handles quickly,
# plus a few tiny disks made with sfdisk when it is installed. Corpora are
# not committed (.gitignore); rerunning is cheap and idempotent.
# Needs: zstd; optional: sfdisk (util-linux/fdisk).
set -euo pipefail

fuzz=$(cd "$(dirname "$0")" && pwd)
fixtures=$fuzz/../imaging/tests/fixtures
MiB=$((1024 * 1024))
KiB=1024

command -v zstd >/dev/null || {
	echo "seed-corpora: zstd is needed (apt-get install zstd)" >&2
	exit 1
}

# part_read: whole disks. GPT fixtures keep their first and last 64 KiB
# (MBR, headers, entry arrays); MBR fixtures their first 64 KiB (their EBRs
# are MiBs in, so tiny sfdisk disks below cover the chains).
out=$fuzz/corpus/part_read
mkdir -p "$out"
while read -r name _size _ss head _; do
	case $name in '#'* | '') continue ;; esac
	raw=$(mktemp)
	zstd -q -d -c "$fixtures/part/$name.zst" >"$raw"
	{
		head -c $((64 * KiB)) "$raw"
		if [ "$head" = $MiB ]; then tail -c $((64 * KiB)) "$raw"; fi
	} >"$out/fixture-$name"
	rm -f "$raw"
done <"$fixtures/part/INDEX"

if command -v sfdisk >/dev/null; then
	tiny() {
		local name=$1 script=$2 img
		img=$(mktemp)
		truncate -s $((128 * KiB)) "$img"
		if printf "$script" | sfdisk -q "$img" >/dev/null 2>&1; then
			cp "$img" "$out/tiny-$name"
		fi
		rm -f "$img"
	}
	tiny mbr-logical 'label: dos\nlabel-id: 0x0badcafe\nstart=4, size=8, type=c, bootable\nstart=12, size=8, type=83\nstart=20, size=200, type=5\nstart=22, size=8, type=83\nstart=32, size=8, type=82\nstart=42, size=8, type=7\nstart=60, size=100, type=83\n'
	tiny gpt 'label: gpt\nfirst-lba: 34\nstart=34, size=8, type=U, name=esp\nstart=42, size=16, type=L, name=root\nstart=100, size=8, type=S, name=swap\n'
fi

# fs_probe_used: filesystem images, first 1 MiB (superblocks, FATs, the
# first bitmaps; the rest reads past the end and must fail cleanly).
out=$fuzz/corpus/fs_probe_used
mkdir -p "$out"
for z in "$fixtures"/fs/*.zst; do
	[ -e "$z" ] || continue
	zstd -q -d -c "$z" | head -c $MiB >"$out/fixture-$(basename "$z" .zst)" || true
done

# lvm_read: physical volumes made by lvm2, their first 64 KiB (label, area
# header, the metadata text; the target pads with zeros).
out=$fuzz/corpus/lvm_read
mkdir -p "$out"
for z in "$fixtures"/lvm/*.zst; do
	[ -e "$z" ] || continue
	zstd -q -d -c "$z" | head -c $((64 * KiB)) >"$out/fixture-$(basename "$z" .zst)" || true
done

# md_read: 16 KiB members of a two-disk RAID1 with a metadata 1.2, 1.1 and
# 1.0 superblock each (this machine's kernel has no md, so mdadm cannot
# make them; the layout and checksum are md_p.h's, as imaging::md's tests).
mkdir -p "$fuzz/corpus/md_read"
python3 - "$fuzz/corpus/md_read" <<'PY'
import struct, sys
def member(version):
    n = 16 * 1024
    at = {"1.2": 4096, "1.1": 0, "1.0": ((n // 512 - 16) & ~7) * 512}[version]
    off = 0 if version == "1.0" else 8192
    sb = bytearray(260)
    struct.pack_into("<II", sb, 0, 0xa92b4efc, 1)
    sb[16:32] = bytes(range(1, 17)); sb[32:40] = b"debian:0"
    struct.pack_into("<I", sb, 72, 1); struct.pack_into("<I", sb, 92, 2)
    struct.pack_into("<QQQ", sb, 128, off // 512, 8, at // 512)
    struct.pack_into("<QQ", sb, 200, 7, 2**64 - 1)
    struct.pack_into("<I", sb, 220, 2); struct.pack_into("<HH", sb, 256, 0, 1)
    s = sum(struct.unpack_from("<65I", sb))
    struct.pack_into("<I", sb, 216, ((s & 0xffffffff) + (s >> 32)) & 0xffffffff)
    m = bytearray(n); m[at:at + 260] = sb
    return m
for v in ("1.2", "1.1", "1.0"):
    open(f"{sys.argv[1]}/member-{v}", "wb").write(member(v))
PY

# luks_header: headers cryptsetup writes on files (no dm-crypt needed):
# LUKS1's first 4 KiB and LUKS2's JSON metadata; none when cryptsetup is
# missing (scripts/setup installs it).
mkdir -p "$fuzz/corpus/luks_header"
if command -v cryptsetup >/dev/null; then
	tmp=$(mktemp -d)
	printf pw >"$tmp/pw"
	for t in luks1 luks2; do
		truncate -s 20M "$tmp/$t"
		cryptsetup luksFormat -q --type "$t" --pbkdf-force-iterations 1000 $([ "$t" = luks2 ] && echo --pbkdf pbkdf2) --key-file "$tmp/pw" "$tmp/$t" >/dev/null 2>&1 || continue
		head -c 4096 "$tmp/$t" >"$fuzz/corpus/luks_header/$t-start"
	done
	[ -e "$tmp/luks2" ] && dd if="$tmp/luks2" bs=4096 skip=1 count=3 status=none | tr -d '\0' >"$fuzz/corpus/luks_header/luks2-json"
	rm -rf "$tmp"
fi

echo "seed-corpora: corpus now $(ls "$fuzz/corpus/part_read" | wc -l) part_read, $(ls "$fuzz/corpus/fs_probe_used" | wc -l) fs_probe_used, $(ls "$out" | wc -l) lvm_read, $(ls "$fuzz/corpus/md_read" | wc -l) md_read inputs"

# dhcp_packet / tftp_packet: the captured packets of pxe-server's golden tests.
for t in dhcp_packet tftp_packet; do mkdir -p "$fuzz/corpus/$t"; done
for f in "$fuzz"/../pxe-server/src/testdata/*.bin; do
	[ -e "$f" ] || continue
	case $(basename "$f") in
	*tftp*) cp "$f" "$fuzz/corpus/tftp_packet/" ;;
	*) cp "$f" "$fuzz/corpus/dhcp_packet/" ;;
	esac
done
# inf_parse: the INF fixtures; hive_open: the small hivex hives.
mkdir -p "$fuzz/corpus/inf_parse" "$fuzz/corpus/hive_open"
find "$fuzz/../drivers/tests/fixtures/inf" -type f \( -name '*.inf' -o -name '*.inx' \) -exec cp {} "$fuzz/corpus/inf_parse/" \;
for h in "${RESCUE_TESTDATA:-$fuzz/../../shared/testdata}"/hives/hivex/*; do
	[ -f "$h" ] && cp "$h" "$fuzz/corpus/hive_open/"
done
true
