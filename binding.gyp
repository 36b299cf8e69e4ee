{
  "targets": [
    {
      "target_name": "strata_native",
      "sources": ["src/native/strata_native.c", "src/native/read-ring.c"],
      "cflags": ["-O2", "-Wall"],
      "libraries": ["-lpthread"]
    }
  ]
}
