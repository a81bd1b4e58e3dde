#!/usr/bin/env bash
# Builds the archive-fidelity fixture tree in $1 (must not exist): every entry type, names that are not UTF-8,
# long names and link targets, binary xattrs and a security.capability, POSIX ACLs (access and default), sparse
# files, hard links, set-id bits, nanosecond and pre-1970 mtimes, owners above the ustar limit. Needs root
# (device nodes, chown, trusted.* and security.* xattrs). Used by ArchiveCorpusTests; usable by hand too.
set -euo pipefail
root=$1
[ ! -e "$root" ] || { echo "make-fixture: $root exists" >&2; exit 1; }
mkdir -p "$root"
cd "$root"

# Regular files of several sizes.
printf 'hello\n' > text.txt
: > empty
head -c 300000 /dev/urandom > random.bin
printf 'koi8-r name, first\n' > $'koi\xf0\xf2name'       # KOI8-R bytes: not UTF-8
printf 'koi8-r name, second\n' > $'koi\xd0\xd2name'      # a different name that U+FFFD would merge with the first
mkdir $'dir-\xff\xfe'
printf 'inside a non-UTF-8 directory\n' > $'dir-\xff\xfe/file-\xe9t\xe9'
printf 'utf-8 name\n' > 'çà-ünïcödé'
long=$(printf 'n%.0s' $(seq 1 150))
printf 'long name\n' > "$long"
mkdir -p "deep/$(printf 'd%.0s' $(seq 1 90))/$(printf 'e%.0s' $(seq 1 90))"
printf 'path longer than 255 bytes\n' > "deep/$(printf 'd%.0s' $(seq 1 90))/$(printf 'e%.0s' $(seq 1 90))/$(printf 'f%.0s' $(seq 1 90))"

# Links.
ln -s text.txt rel-link
ln -s /etc/hostname abs-link
ln -s does/not/exist dangling
ln -s $'koi\xf0\xf2name' $'link-to-\xf0\xf2'
ln -s "$long" long-target-link
ln text.txt hard1
ln text.txt $'hard-\xc0'
mkdir hl
ln random.bin hl/random-again

# Special files.
mkfifo fifo
mknod chardev c 1 3
mknod blockdev b 7 200
chmod 4755 random.bin
mkdir sticky && chmod 1777 sticky
mkdir setgid && chmod 2750 setgid
chmod 0640 hard1

# Sparse files: holes at the start, in the middle, at the end; one all hole.
truncate -s 8M sparse.img
printf 'data at 1M' | dd of=sparse.img bs=1 seek=$((1 << 20)) conv=notrunc status=none
head -c 70000 /dev/urandom | dd of=sparse.img bs=1 seek=$((5 << 20)) conv=notrunc status=none
truncate -s 3M all-hole.img

# Extended attributes: text, binary (bytes >= 0x80 and NUL), trusted.*, a file capability (cap_setuid = 0x80).
setfattr -n user.text -v 'some text' text.txt
setfattr -n user.binary -v 0x00ff80fe0a0d7f text.txt
setfattr -n trusted.note -v 0xc0ffee text.txt
setfattr -n user.on-dir -v 'dir attr' hl
setfattr -n security.capability -v 0x0100000280040000000000000000000000000000 random.bin

# POSIX ACLs: an access ACL with named users and groups, and a directory with a default ACL whose files inherit.
setfacl -m u:1234:rw-,g:2345:r--,m::rw- text.txt
mkdir acl-dir
setfacl -m u:1234:rwx,g:2345:r-x acl-dir
setfacl -d -m u:1234:rwx,g:2345:r-x,o::--- acl-dir
printf 'inherits\n' > acl-dir/inherited
mkdir acl-dir/subdir

# Owners, including one above the ustar/octal limit of 2097151.
chown 1234:2345 text.txt
chown -h 4321:5432 rel-link
chown 3000000:3000001 empty

# Times: nanoseconds, before 1970, far future; directories last, after their contents.
touch -h -d '2001-02-03 04:05:06.123456789' text.txt
touch -h -d '1969-07-20 20:17:40.5' rel-link
touch -d '1901-12-14 00:00:00' empty
touch -d '2100-01-01 00:00:00' random.bin
find . -depth -type d -print0 | xargs -0 touch -h -d '2020-02-02 02:02:02.020202020'
