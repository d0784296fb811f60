/*
 * export.h — `chorus export` and `chorus import`: conversations out of and
 * into the hub's store, as JSON files.
 *
 * Two file shapes (docs/OPERATIONS.md has the full description):
 *
 *   chorus   one document holding everything needed to restore the store's
 *            conversations exactly — same ids, same seqs, same event ids,
 *            timestamps, members:
 *              {"version":1,"exportedAt":ISO,"projects":[...],
 *               "conversations":[{id, projectId?, title?, owner, agent?,
 *                 metadata?, createdAt, updatedAt, lastSeq, messageCount,
 *                 members:[user...], events:[{seq, kind, id, clientId?,
 *                 type?, role?, content?, source?, userId, deviceId?,
 *                 body?, ts, refSeq?}...]}...]}
 *   unified  profile `unified`'s existing data (shared/compat/CLIENT-PROFILES.md):
 *            a folder with one file per conversation,
 *              {"id","title"?,"createdAt","updatedAt","messages":[message objects]}
 *
 * Both commands are main()s in the style of cli.h: argv[0] is the
 * subcommand's name, argv[1..argc) its arguments; the data directory comes
 * from --data-dir / CHORUS_DATA_DIR / --config like every other subcommand.
 * They open their own store instance, so they work while a hub runs on the
 * same data directory (SQLite WAL; writers wait on the store's busy timeout).
 *
 * Return value = process exit code:
 *   0  success
 *   1  failure: the store cannot be opened, a file cannot be read or written,
 *      a file or a conversation in it is invalid or conflicts with the store
 *      (import goes on with the other conversations, then returns 1)
 *   2  usage error (unknown option, missing or invalid value)
 * Messages go to stderr; --help / -h prints usage on stdout and returns 0.
 */
#ifndef CH_CLI_EXPORT_H
#define CH_CLI_EXPORT_H

/* chorus export [--conversation ID]... [--format chorus|unified] [--out FILE|-|DIR]
 *   chorus  (default) one document to FILE (written whole, then renamed into
 *           place) or to stdout (no --out, or --out -)
 *   unified one file per conversation in DIR (--out required; created when
 *           missing): DIR/<id>.json, characters outside [A-Za-z0-9._@:-] and a
 *           leading '.' written as %XX
 * A summary line goes to stderr. An unknown --conversation id fails (1). */
int ch_cli_export(int argc, char **argv);

/* chorus import [--user U] [--format chorus|unified] FILE|DIR|-
 *   FILE holding a chorus export: every conversation restored with its ids
 *        and seqs; events already in the store (same seq, same id) are
 *        skipped, so importing twice changes nothing; a conversation whose
 *        stored history differs from the file's fails with a conflict
 *   DIR  of unified files (*.json), or one unified FILE: each becomes a
 *        conversation owned by --user (required here), messages appended in
 *        file order with their `id` as client id (re-import adds nothing)
 * Each conversation is imported in one transaction: a bad or conflicting one
 * leaves nothing behind. The counts go to stdout as one line:
 *   conversations: N (new N, updated N, unchanged N), events added: N, already present: N, failed: N
 */
int ch_cli_import(int argc, char **argv);

#endif
