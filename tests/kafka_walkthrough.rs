//! The Kafka walkthrough users know, step by step through `scripts/kafka`
//! against the stack's broker: create, list, describe, configs, produce
//! with and without keys, consume from the beginning and as a group, the
//! group's lag, delete.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

fn kafka(args: &[&str], input: Option<&str>) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
    let mut child = Command::new(script)
        .args(args)
        .env("KAFKA_BROKERS", support::kafka_brokers())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scripts/kafka runs");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(text) = input {
        stdin.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("scripts/kafka finishes");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "scripts/kafka {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn kafka_walkthrough_through_scripts_kafka() {
    let run = support::unique_base();
    let topic = format!("walkthrough-{run}");
    let group = format!("walkthrough-group-{run}");
    let t = topic.as_str();

    kafka(&["topics", "--create", "--topic", t, "--partitions", "4", "--replication-factor", "1"], None);

    let listed = kafka(&["topics", "--list"], None);
    assert!(listed.lines().any(|l| l == t), "{t} listed in:\n{listed}");

    let described = kafka(&["topics", "--describe", "--topic", t], None);
    assert!(described.contains("PartitionCount: 4"), "describe:\n{described}");
    assert_eq!(described.matches("Partition: ").count(), 4, "describe:\n{described}");

    let configs = kafka(&["configs", "--entity-type", "topics", "--entity-name", t, "--describe", "--all"], None);
    assert!(configs.contains("cleanup.policy=delete"), "configs:\n{configs}");

    kafka(
        &[
            "console-producer",
            "--topic",
            t,
            "--reader-property",
            "parse.key=true",
            "--reader-property",
            "key.separator=:",
        ],
        Some("alice:first\nbob:second\nalice:third\n"),
    );
    kafka(&["console-producer", "--topic", t], Some("no-key-1\nno-key-2\n"));

    let all = kafka(
        &[
            "console-consumer",
            "--topic",
            t,
            "--from-beginning",
            "--max-messages",
            "5",
            "--timeout-ms",
            "30000",
            "--formatter-property",
            "print.key=true",
        ],
        None,
    );
    let mut lines: Vec<&str> = all.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["alice\tfirst", "alice\tthird", "bob\tsecond", "null\tno-key-1", "null\tno-key-2"]);
    // Keyed records keep their order within the key's partition.
    let alice: Vec<&str> = all.lines().filter(|l| l.starts_with("alice")).collect();
    assert_eq!(alice, ["alice\tfirst", "alice\tthird"]);

    let as_group = kafka(
        &[
            "console-consumer",
            "--topic",
            t,
            "--group",
            group.as_str(),
            "--from-beginning",
            "--max-messages",
            "5",
            "--timeout-ms",
            "30000",
        ],
        None,
    );
    assert_eq!(as_group.lines().count(), 5, "group read:\n{as_group}");

    let lag = kafka(&["consumer-groups", "--describe", "--group", group.as_str()], None);
    let rows: Vec<Vec<&str>> = lag
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.first() == Some(&group.as_str()))
        .collect();
    assert_eq!(rows.len(), 4, "one row a partition:\n{lag}");
    let committed: i64 = rows.iter().map(|r| r[3].parse::<i64>().expect("offset")).sum();
    assert_eq!(committed, 5, "the group committed all five records:\n{lag}");
    assert!(rows.iter().all(|r| r[5] == "0"), "no lag left:\n{lag}");

    kafka(&["topics", "--delete", "--topic", t], None);
    let listed = kafka(&["topics", "--list"], None);
    assert!(!listed.lines().any(|l| l == t), "{t} deleted, still listed:\n{listed}");
}
