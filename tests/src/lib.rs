//! shardweb-tests: end-to-end tests that run shardweb's real binaries as separate processes.
