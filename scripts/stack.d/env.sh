# Shared by scripts/stack and scripts/kafka: where things are, which ports.
# Every port and folder can be overridden from the environment.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CONF="$ROOT/scripts/stack.d"

export VIGIL_PG_PORT=${VIGIL_PG_PORT:-5432}
export VIGIL_KAFKA_PORT=${VIGIL_KAFKA_PORT:-9092}
export VIGIL_CONTROLLER_PORT=${VIGIL_CONTROLLER_PORT:-9093}
export VIGIL_CONNECT_PORT=${VIGIL_CONNECT_PORT:-8083}
export STACK_CACHE=${VIGIL_STACK_CACHE:-$HOME/.cache/vigil-stack}
export STACK_DATA=${VIGIL_STACK_DATA:-/var/tmp/vigil-stack-$(id -un)}
KAFKA_LIBS="$STACK_CACHE/kafka-libs"

# kafka_tool MAINCLASS ARGS...: one of Kafka's command-line tools, run from
# the stack's jars with warnings only on stderr.
kafka_tool() {
    [ -f "$KAFKA_LIBS/.pom.sha256" ] || { echo "Kafka's jars are not installed: run scripts/stack up" >&2; return 1; }
    java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="file:$CONF/log4j2.properties" \
        -Dvigil.log.level=WARN -cp "$KAFKA_LIBS/*" "$@"
}
