#!/bin/sh
# Resolves the jars of the Apache Kafka broker that the integration and
# end-to-end tests run (e2e/kafka/pom.xml) into .cache/kafka/libs, through
# Maven, and prints that directory. Idempotent: when the jars were resolved
# from the same pom, it only prints the directory.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
pom="$root/e2e/kafka/pom.xml"
cache="$root/.cache/kafka"
libs="$cache/libs"
stamp="$cache/libs.stamp"

mkdir -p "$cache"
# One resolver at a time: test binaries run in parallel.
exec 9>"$cache/lock"
flock 9

want=$(sha256sum "$pom" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$libs" ]; then
	echo "$libs"
	exit 0
fi

rm -rf "$libs.tmp"
mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$libs.tmp" >&2
rm -rf "$libs"
mv "$libs.tmp" "$libs"
echo "$want" >"$stamp"
echo "$libs"
