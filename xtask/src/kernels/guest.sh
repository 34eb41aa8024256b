#!/bin/sh
# /init of the kernel-matrix guest (`cargo xtask test --kernels`, xtask/src/kernels).
# Mounts what tracer needs (proc, sysfs, devtmpfs, tracefs, cgroup v2 with the memory
# controller), runs each scenario under `tracer run`, prints what the host compares on
# the serial console between markers, and powers off:
#   @@@KERNEL RELEASE                      the kernel is up and /init runs
#   @@@BEGIN NAME t=UPTIME                 a section starts
#   @@@END NAME rc=N t=UPTIME              it ends; for a scenario, rc is tracer's status
#   @@@DONE                                every scenario ran
# Sections: SCENARIO (the scenario's own messages), SCENARIO.report (`tracer report
# --format json` of its trace), SCENARIO.log (tracer's stderr), SCENARIO.out (the traced
# command's stdout), SCENARIO.jsonl (the trace), and doctor, dmesg.
# The scenarios mirror xtask/src/kernels/host.rs (same commands, limits and grace): keep
# them in step.

export PATH=/bin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# The OOM killer's report and other kernel messages would cut through the reports.
dmesg -n 1
mount -t tracefs tracefs /sys/kernel/tracing || echo "guest: cannot mount tracefs at /sys/kernel/tracing"
mount -t debugfs debugfs /sys/kernel/debug || echo "guest: cannot mount debugfs at /sys/kernel/debug"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo "guest: cannot mount cgroup2 at /sys/fs/cgroup"
echo +memory > /sys/fs/cgroup/cgroup.subtree_control || echo "guest: cannot enable the memory controller"
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
ip link set lo up || ifconfig lo 127.0.0.1 up
# Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
ulimit -l unlimited

echo "@@@KERNEL $(uname -r)"

LIMIT=90 # seconds a scenario may take

up() {
    read -r u _ < /proc/uptime
    echo "$u"
}

begin() { echo "@@@BEGIN $1 t=$(up)"; }
end() { echo "@@@END $1 rc=$2 t=$(up)"; }

# show NAME FILE: FILE as section NAME
show() {
    begin "$1"
    [ -f "$2" ] && cat "$2"
    echo
    end "$1" 0
}

# wait_for FILE TEXT: until FILE has a line with TEXT (at most $LIMIT s)
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt $((LIMIT * 10)) ]; then
            echo "guest: no \"$2\" in $1 after ${LIMIT}s"
            return 1
        fi
        sleep 0.1
    done
}

# traced NAME GRACE CMD...: `tracer run` of CMD in the background, its pid in $TRACER
traced() {
    name=$1
    grace=$2
    shift 2
    timeout -s INT $LIMIT tracer run --no-tui --jsonl /tmp/$name.jsonl --grace $grace -- "$@" \
        > /tmp/$name.out 2> /tmp/$name.log &
    TRACER=$!
}

# finish NAME: wait for the tracer, end the scenario, print its report and files
finish() {
    wait $TRACER
    end "$1" $?
    tracer report /tmp/$1.jsonl --format json > /tmp/$1.report 2>> /tmp/$1.log
    show "$1.out" /tmp/$1.out
    show "$1.log" /tmp/$1.log
    show "$1.report" /tmp/$1.report
    show "$1.jsonl" /tmp/$1.jsonl
}

# stop_tracer: the scenario could not go on; end the trace (SIGINT flushes it)
stop_tracer() {
    kill -INT $TRACER 2>/dev/null
}

# Clients for `nc HOST PORT -e PROG`: PROG's stdout is the connection.
cat > /tmp/send-unread << 'EOF'
#!/bin/sh
# A request the server never reads; the connection is held open meanwhile.
echo "unread request"
sleep 3
EOF
cat > /tmp/hold << 'EOF'
#!/bin/sh
# Idle until the server was killed, then write to the dead connection.
while [ ! -e /tmp/killed ]; do sleep 0.1; done
echo "anyone?"
sleep 1
EOF
chmod +x /tmp/send-unread /tmp/hold

tracer doctor > /tmp/doctor.txt 2>&1
show doctor /tmp/doctor.txt

# oom: allocate until OOM-killed in a 64 MiB memory cgroup
begin oom
mkdir /sys/fs/cgroup/t
echo 67108864 > /sys/fs/cgroup/t/memory.max
echo 0 > /sys/fs/cgroup/t/memory.swap.max 2>/dev/null
traced oom 500ms tracer-stress alloc --cgroup /sys/fs/cgroup/t
finish oom
show oom.memory.events /sys/fs/cgroup/t/memory.events
rmdir /sys/fs/cgroup/t

# signal: SIGKILL from another process (busybox kill)
begin signal
traced signal 1s tracer-stress ignore-term
if wait_for /tmp/signal.out ready; then
    /bin/kill -9 $(pidof tracer-stress)
else
    stop_tracer
fi
finish signal

# refused: connect to a port nobody listens on, from a program that sh execs
begin refused
traced refused 500ms sh -c 'exec tracer-stress connect 9'
finish refused

# abort: the server closes a connection with unread data
begin abort
traced abort 500ms tracer-stress serve-unread
if wait_for /tmp/abort.out listening; then
    port=$(sed -n 's/^listening //p' /tmp/abort.out)
    nc 127.0.0.1 $port -e /tmp/send-unread &
else
    stop_tracer
fi
finish abort

# killed_with_clients: SIGKILL of a server with two idle clients, which then write
begin killed_with_clients
rm -f /tmp/killed
traced killed_with_clients 2s tracer-stress serve-idle 2
if wait_for /tmp/killed_with_clients.out listening; then
    port=$(sed -n 's/^listening //p' /tmp/killed_with_clients.out)
    nc 127.0.0.1 $port -e /tmp/hold &
    nc 127.0.0.1 $port -e /tmp/hold &
    if wait_for /tmp/killed_with_clients.out accepted; then
        /bin/kill -9 $(pidof tracer-stress)
        sleep 0.3
        touch /tmp/killed
        # One more connect, refused now that nobody listens.
        nc -w 2 127.0.0.1 $port < /dev/null
    else
        stop_tracer
    fi
else
    stop_tracer
fi
finish killed_with_clients

# mmap_file: map a 16 MiB file and touch every page
begin mmap_file
dd if=/dev/zero of=/tmp/model.bin bs=1048576 count=16 2>/dev/null
traced mmap_file 500ms tracer-stress mmap-file /tmp/model.bin
finish mmap_file

dmesg > /tmp/dmesg.txt
show dmesg /tmp/dmesg.txt
echo "@@@DONE"
poweroff -f
# If poweroff could not: a panic of PID 1 ends QEMU too (-no-reboot, panic=-1).
exit 1
