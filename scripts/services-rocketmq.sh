#!/usr/bin/env bash
# Run a real Apache RocketMQ 5 for tests: name server + broker with its gRPC
# proxy in "local" mode, from the Maven Central jars (no Docker, no tarball).
#
#   scripts/services-rocketmq.sh up     # start, wait, create topics/groups, then print
#                                       #   export FLEETS_TEST_ROCKETMQ_ENDPOINTS=127.0.0.1:8081
#                                       #   export FLEETS_TEST_ROCKETMQ_NAME_SERVER=127.0.0.1:9876
#   scripts/services-rocketmq.sh down   # stop the JVMs that `up` started
#
# Typical use:  eval "$(scripts/services-rocketmq.sh up)"
#
# Only the export lines go to stdout; all progress goes to stderr.
# Needs: java (tested with 17) and mvn on PATH; Maven Central reachable on the first run.
#
# Environment:
#   FLEETS_SERVICES_DIR       runtime state root (default $HOME/.cache/fleets_mailbox/services);
#                             this script uses its rocketmq/ sub-directory
#   FLEETS_ROCKETMQ_VERSION   RocketMQ version of every org.apache.rocketmq artifact (default 5.3.3)
#   FLEETS_ROCKETMQ_TOPICS    extra topics, space-separated; NAME or NAME:TYPE with TYPE
#                             NORMAL (default), FIFO, DELAY or TRANSACTION (the topic's
#                             message.type: a producer refuses other kinds of message)
#   FLEETS_ROCKETMQ_GROUPS    extra consumer groups, space-separated; NAME or NAME:FIFO
#   FLEETS_ROCKETMQ_TIMEOUT   seconds to wait for each readiness step (default 120)
#   FLEETS_ROCKETMQ_GRPC_PORT (8081), FLEETS_ROCKETMQ_REMOTING_PORT (8080),
#   FLEETS_ROCKETMQ_NAMESRV_PORT (9876), FLEETS_ROCKETMQ_BROKER_PORT (10911; the broker
#                             also listens on that port -2 and +1): to run a second
#                             instance beside the first, with its own FLEETS_SERVICES_DIR
set -euo pipefail

RMQ_VERSION="${FLEETS_ROCKETMQ_VERSION:-5.3.3}"
LIB_DIR="$HOME/.cache/fleets_mailbox/rocketmq-${RMQ_VERSION}/lib"
STATE_DIR="${FLEETS_SERVICES_DIR:-$HOME/.cache/fleets_mailbox/services}/rocketmq"
[[ "$STATE_DIR" == /* ]] || STATE_DIR="$PWD/$STATE_DIR"
TIMEOUT="${FLEETS_ROCKETMQ_TIMEOUT:-120}"

HOST=127.0.0.1
NAMESRV_PORT="${FLEETS_ROCKETMQ_NAMESRV_PORT:-9876}"
BROKER_PORT="${FLEETS_ROCKETMQ_BROKER_PORT:-10911}" # the broker also takes this -2 and +1
GRPC_PORT="${FLEETS_ROCKETMQ_GRPC_PORT:-8081}"
REMOTING_PROXY_PORT="${FLEETS_ROCKETMQ_REMOTING_PORT:-8080}"
CLUSTER=DefaultCluster
BROKER_NAME=fleets-broker

# fleets-test-events: the bus conformance tests' own topic.
BASE_TOPICS=(fleets-message-events fleets-notification-events fleets-read-events fleets-test-events)
BASE_GROUPS=(fleets-push fleets-analytics)

NAMESRV_MAIN=org.apache.rocketmq.namesrv.NamesrvStartup
PROXY_MAIN=org.apache.rocketmq.proxy.ProxyStartup

JAVA_MODULE_OPTS=(
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-exports=java.base/sun.nio.ch=ALL-UNNAMED
  --add-exports=java.base/sun.security.x509=ALL-UNNAMED
)

log() { printf 'rocketmq: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s; }

# ---------------------------------------------------------------- helpers

# pid from a pid file, only if that process is alive and is the JVM we started
# for this state dir (guards against a recycled pid).
live_pid() { # name main_class
  local f="$STATE_DIR/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *" -Duser.home=$STATE_DIR "* && "$cmdline" == *" $2 "* ]] || return 1
  printf '%s\n' "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

show_failure() { # name
  local out="$STATE_DIR/$1.out" logdir="$STATE_DIR/logs/rocketmqlogs"
  log "---- last lines of $out"
  tail -n 30 "$out" >&2 2>/dev/null || true
  case "$1" in
    namesrv) set -- "$logdir/namesrv.log" ;;
    proxy) set -- "$logdir/proxy.log" "$logdir/broker.log" ;;
  esac
  local f
  for f in "$@"; do
    [[ -f "$f" ]] || continue
    log "---- last lines of $f"
    tail -n 30 "$f" >&2 || true
  done
}

# wait until $STATE_DIR/<name>.out contains a line, bounded, while the JVM lives
wait_for_line() { # name pid pattern
  local name="$1" pid="$2" pattern="$3" deadline=$(($(now) + TIMEOUT))
  while ! grep -q -- "$pattern" "$STATE_DIR/$name.out" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_failure "$name"
      die "$name exited during startup (see $STATE_DIR)"
    fi
    if (($(now) >= deadline)); then
      show_failure "$name"
      die "$name not ready after ${TIMEOUT}s (see $STATE_DIR)"
    fi
    sleep 0.2
  done
}

start_jvm() { # name heap_opts... -- main args...
  local name="$1"
  shift
  local -a jvm=()
  while [[ "$1" != "--" ]]; do jvm+=("$1"); shift; done
  shift
  # setsid: own session, so a Ctrl-C in the calling shell does not reach it
  ROCKETMQ_HOME="$STATE_DIR" setsid java "${jvm[@]}" "${JAVA_MODULE_OPTS[@]}" \
    -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow \
    -Duser.home="$STATE_DIR" -Drocketmq.home.dir="$STATE_DIR" \
    -cp "$LIB_DIR/*" "$@" </dev/null >"$STATE_DIR/$name.out" 2>&1 9>&- &
  echo $! >"$STATE_DIR/$name.pid"
}

stop_jvm() { # name main_class
  local pid deadline
  pid="$(live_pid "$1" "$2")" || { rm -f "$STATE_DIR/$1.pid"; return 0; }
  log "stopping $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(($(now) + 60))
  while kill -0 "$pid" 2>/dev/null; do
    if (($(now) >= deadline)); then
      log "$1 still running after 60s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$(($(now) + 10))
      while kill -0 "$pid" 2>/dev/null && (($(now) < deadline)); do sleep 0.2; done
      break
    fi
    sleep 0.2
  done
  kill -0 "$pid" 2>/dev/null && die "$1 (pid $pid) did not exit"
  rm -f "$STATE_DIR/$1.pid"
}

# ---------------------------------------------------------------- jars

fetch_jars() {
  if [[ -f "$LIB_DIR/.complete" ]]; then
    log "using cached jars in $LIB_DIR"
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (needed once, to fetch the RocketMQ jars)"
  log "fetching RocketMQ $RMQ_VERSION jars from Maven Central into $LIB_DIR (first run only)"
  local pomdir="$STATE_DIR/fetch-$RMQ_VERSION" tmp="$LIB_DIR.tmp.$$"
  mkdir -p "$pomdir" "$(dirname "$LIB_DIR")"
  local deps="" a
  for a in rocketmq-namesrv rocketmq-broker rocketmq-proxy rocketmq-tools; do
    deps+="    <dependency><groupId>org.apache.rocketmq</groupId><artifactId>$a</artifactId><version>$RMQ_VERSION</version></dependency>
"
  done
  cat >"$pomdir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by scripts/services-rocketmq.sh: only used to download jars -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.fleets-mailbox</groupId>
  <artifactId>rocketmq-server-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
$deps  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.6.1</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF
  rm -rf "$tmp"
  # (sed strips the colour codes that mvn -q prints even in batch mode)
  if ! mvn -B -q -Dstyle.color=never -f "$pomdir/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2; then
    rm -rf "$tmp"
    rmdir "$(dirname "$LIB_DIR")" 2>/dev/null || true
    die "mvn could not fetch org.apache.rocketmq:*:$RMQ_VERSION"
  fi
  [[ -f "$tmp/rocketmq-proxy-$RMQ_VERSION.jar" ]] || { rm -rf "$tmp"; die "rocketmq-proxy-$RMQ_VERSION.jar missing after mvn"; }
  touch "$tmp/.complete"
  rm -rf "$LIB_DIR"
  mv "$tmp" "$LIB_DIR"
  log "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l) jars"
}

# ---------------------------------------------------------------- config

write_configs() {
  mkdir -p "$STATE_DIR/store" "$STATE_DIR/logs"
  cat >"$STATE_DIR/namesrv.conf" <<EOF
listenPort=$NAMESRV_PORT
EOF
  # initPopOffsetByCheckMsgInMem=false: a new consumer group (each node's
  # push group) starts at the end of the queues instead of replaying every
  # message the broker still holds in memory.
  cat >"$STATE_DIR/broker.conf" <<EOF
brokerClusterName=$CLUSTER
brokerName=$BROKER_NAME
brokerId=0
brokerRole=ASYNC_MASTER
flushDiskType=ASYNC_FLUSH
namesrvAddr=$HOST:$NAMESRV_PORT
brokerIP1=$HOST
brokerIP2=$HOST
listenPort=$BROKER_PORT
storePathRootDir=$STATE_DIR/store
storePathCommitLog=$STATE_DIR/store/commitlog
mappedFileSizeCommitLog=67108864
maxHashSlotNum=50000
maxIndexNum=200000
autoCreateTopicEnable=false
autoCreateSubscriptionGroup=true
initPopOffsetByCheckMsgInMem=false
EOF
  # grpcShutdownTimeSeconds: the default 30 s wait for connected clients'
  # streams (every client keeps one open) made `down` take 40 s
  cat >"$STATE_DIR/rmq-proxy.json" <<EOF
{
  "rocketMQClusterName": "$CLUSTER",
  "namesrvAddr": "$HOST:$NAMESRV_PORT",
  "proxyMode": "local",
  "grpcServerPort": $GRPC_PORT,
  "remotingListenPort": $REMOTING_PROXY_PORT,
  "grpcShutdownTimeSeconds": 3
}
EOF
}

# One JVM creates every topic and group (straight at the broker, which makes it
# register with the name server at once instead of after its first 10 s
# heartbeat), then waits until the name server serves a route for each topic.
write_setup_tool() {
  cat >"$STATE_DIR/RmqSetup.java" <<'EOF'
// generated by scripts/services-rocketmq.sh; run as: java -cp 'lib/*' RmqSetup.java ...
import java.util.*;
import org.apache.rocketmq.common.TopicConfig;
import org.apache.rocketmq.common.constant.PermName;
import org.apache.rocketmq.remoting.protocol.route.TopicRouteData;
import org.apache.rocketmq.remoting.protocol.subscription.SubscriptionGroupConfig;
import org.apache.rocketmq.tools.admin.DefaultMQAdminExt;

// args: namesrvAddr brokerAddr timeoutSeconds topic[:TYPE]... -- group[:FIFO]...
public class RmqSetup {
  interface Op { void run() throws Exception; }

  public static void main(String[] a) throws Exception {
    String namesrv = a[0], broker = a[1];
    long deadline = System.currentTimeMillis() + Long.parseLong(a[2]) * 1000L;
    List<String> topics = new ArrayList<>(), groups = new ArrayList<>();
    boolean inGroups = false;
    for (int i = 3; i < a.length; i++) {
      if (a[i].equals("--")) { inGroups = true; continue; }
      (inGroups ? groups : topics).add(a[i]);
    }
    DefaultMQAdminExt admin = new DefaultMQAdminExt(5000);
    admin.setNamesrvAddr(namesrv);
    admin.setInstanceName("fleets-setup-" + ProcessHandle.current().pid());
    int rc = 0;
    try {
      admin.start();
      for (String spec : topics) {
        String[] p = spec.split(":", 2);
        String type = p.length > 1 ? p[1].toUpperCase(Locale.ROOT) : "NORMAL";
        TopicConfig tc = new TopicConfig(p[0], 8, 8, PermName.PERM_READ | PermName.PERM_WRITE);
        tc.setOrder(type.equals("FIFO"));
        tc.setAttributes(new HashMap<>(Map.of("+message.type", type)));
        retry(deadline, "create topic " + p[0], () -> admin.createAndUpdateTopicConfig(broker, tc));
        System.err.println("rocketmq: topic " + p[0] + " (" + type + ") ok");
      }
      for (String spec : groups) {
        String[] p = spec.split(":", 2);
        SubscriptionGroupConfig sg = new SubscriptionGroupConfig();
        sg.setGroupName(p[0]);
        sg.setConsumeMessageOrderly(p.length > 1 && p[1].equalsIgnoreCase("FIFO"));
        retry(deadline, "create group " + p[0], () -> admin.createAndUpdateSubscriptionGroupConfig(broker, sg));
        System.err.println("rocketmq: group " + p[0] + " ok");
      }
      for (String spec : topics) {
        String t = spec.split(":", 2)[0];
        retry(deadline, "route of " + t, () -> {
          TopicRouteData r = admin.examineTopicRouteInfo(t);
          if (r == null || r.getQueueDatas() == null || r.getQueueDatas().isEmpty()) {
            throw new IllegalStateException("no route yet");
          }
        });
      }
      System.err.println("rocketmq: name server has routes for " + topics.size() + " topic(s)");
    } catch (Exception e) {
      System.err.println("rocketmq: setup failed: " + e);
      rc = 1;
    }
    System.exit(rc); // skips the client's slow (several seconds) graceful shutdown
  }

  static void retry(long deadline, String what, Op op) throws Exception {
    while (true) {
      try {
        op.run();
        return;
      } catch (Exception e) {
        if (System.currentTimeMillis() > deadline) throw new Exception(what + ": " + e, e);
        Thread.sleep(300);
      }
    }
  }
}
EOF
}

create_topics_and_groups() {
  local -a topics=("${BASE_TOPICS[@]}") groups=("${BASE_GROUPS[@]}") extra
  read -r -a extra <<<"${FLEETS_ROCKETMQ_TOPICS:-}"
  topics+=("${extra[@]}")
  read -r -a extra <<<"${FLEETS_ROCKETMQ_GROUPS:-}"
  groups+=("${extra[@]}")
  write_setup_tool
  log "creating ${#topics[@]} topic(s) and ${#groups[@]} group(s)"
  if ! java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "${JAVA_MODULE_OPTS[@]}" \
    -Duser.home="$STATE_DIR" -Drocketmq.home.dir="$STATE_DIR" \
    -Drmq.logback.configurationFile=rmq.tools.logback.xml \
    -cp "$LIB_DIR/*" "$STATE_DIR/RmqSetup.java" \
    "$HOST:$NAMESRV_PORT" "$HOST:$BROKER_PORT" "$TIMEOUT" \
    "${topics[@]}" -- "${groups[@]}" </dev/null >&2; then
    show_failure proxy
    return 1
  fi
}

# ---------------------------------------------------------------- commands

on_up_exit() {
  local rc=$?
  trap - EXIT
  log "up failed, stopping what was started"
  stop_jvm proxy "$PROXY_MAIN" || true
  stop_jvm namesrv "$NAMESRV_MAIN" || true
  exit $((rc == 0 ? 1 : rc))
}

cmd_up() {
  local t0 npid ppid
  t0=$(now)
  command -v java >/dev/null || die "java not found (needed to run RocketMQ; tested with Java 17)"
  mkdir -p "$STATE_DIR"

  if npid="$(live_pid namesrv "$NAMESRV_MAIN")" && ppid="$(live_pid proxy "$PROXY_MAIN")"; then
    log "already running (namesrv pid $npid, proxy+broker pid $ppid)"
    # the ports it was started with win over the environment of this call
    # shellcheck source=/dev/null
    source "$STATE_DIR/ports.env"
    fetch_jars
    create_topics_and_groups || die "topic/group setup failed"
    printf 'export FLEETS_TEST_ROCKETMQ_ENDPOINTS=%s:%s\n' "$HOST" "$GRPC_PORT"
    printf 'export FLEETS_TEST_ROCKETMQ_NAME_SERVER=%s:%s\n' "$HOST" "$NAMESRV_PORT"
    return 0
  fi
  # half-started leftovers from an earlier run: stop them first
  stop_jvm proxy "$PROXY_MAIN"
  stop_jvm namesrv "$NAMESRV_MAIN"

  local p
  for p in "$NAMESRV_PORT" "$BROKER_PORT" $((BROKER_PORT - 2)) $((BROKER_PORT + 1)) \
    "$GRPC_PORT" "$REMOTING_PROXY_PORT"; do
    port_open "$p" && die "port $p is already in use by another process (not started by this script)"
  done

  fetch_jars
  write_configs
  printf 'NAMESRV_PORT=%s\nBROKER_PORT=%s\nGRPC_PORT=%s\nREMOTING_PROXY_PORT=%s\n' \
    "$NAMESRV_PORT" "$BROKER_PORT" "$GRPC_PORT" "$REMOTING_PROXY_PORT" >"$STATE_DIR/ports.env"

  # any failure from here on (die, or a failing command under set -e): stop what we started
  trap 'on_up_exit' EXIT

  log "starting name server on $HOST:$NAMESRV_PORT"
  start_jvm namesrv -Xms64m -Xmx256m -- \
    -Drmq.logback.configurationFile=rmq.namesrv.logback.xml \
    "$NAMESRV_MAIN" -c "$STATE_DIR/namesrv.conf"
  npid="$(cat "$STATE_DIR/namesrv.pid")"
  wait_for_line namesrv "$npid" "The Name Server boot success"
  log "name server ready after $(($(now) - t0))s"

  log "starting broker + gRPC proxy (local mode) on $HOST:$GRPC_PORT"
  start_jvm proxy -Xms256m -Xmx512m -XX:MaxDirectMemorySize=256m -- \
    -Drmq.logback.configurationFile=rmq.proxy.logback.xml \
    "$PROXY_MAIN" -pm local -bc "$STATE_DIR/broker.conf" -pc "$STATE_DIR/rmq-proxy.json" \
    -n "$HOST:$NAMESRV_PORT"
  ppid="$(cat "$STATE_DIR/proxy.pid")"
  wait_for_line proxy "$ppid" "rocketmq-proxy startup successfully"
  log "broker + proxy ready after $(($(now) - t0))s"

  create_topics_and_groups || die "topic/group setup failed"
  trap - EXIT
  log "up in $(($(now) - t0))s; state and logs in $STATE_DIR"
  printf 'export FLEETS_TEST_ROCKETMQ_ENDPOINTS=%s:%s\n' "$HOST" "$GRPC_PORT"
  printf 'export FLEETS_TEST_ROCKETMQ_NAME_SERVER=%s:%s\n' "$HOST" "$NAMESRV_PORT"
}

cmd_down() {
  local t0
  t0=$(now)
  [[ -d "$STATE_DIR" ]] || { log "nothing to stop"; return 0; }
  # proxy (with the broker) first: it unregisters from the name server on the way out
  stop_jvm proxy "$PROXY_MAIN"
  stop_jvm namesrv "$NAMESRV_MAIN"
  log "down in $(($(now) - t0))s"
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
    up | down)
      mkdir -p "$STATE_DIR"
      exec 9>"$STATE_DIR/.lock"
      flock -w 300 9 || die "another services-rocketmq.sh is still running"
      "cmd_$cmd"
      ;;
    *)
      echo "usage: $0 up|down" >&2
      exit 2
      ;;
  esac
}

main "$@"
