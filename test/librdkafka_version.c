/*
 * The librdkafka running is the one the build was configured with
 * (RILL_EXPECTED_RDKAFKA_VERSION, pkg-config's version of it), so a tree
 * configured with -DRILL_LIBRDKAFKA_PREFIX cannot silently run against the
 * system's librdkafka. The binary links rill's shared library, which loads
 * librdkafka through its own RUNPATH; the header compiled against must say
 * the same version.
 */
#include <stdio.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <rill/rill.h>

int main(void)
{
    const char *want = RILL_EXPECTED_RDKAFKA_VERSION;
    const char *running = rd_kafka_version_str();
    char header[32];
    snprintf(header, sizeof(header), "%d.%d.%d", (RD_KAFKA_VERSION >> 24) & 0xff,
             (RD_KAFKA_VERSION >> 16) & 0xff, (RD_KAFKA_VERSION >> 8) & 0xff);
    printf("rill %s, librdkafka running %s (0x%08x), header %s, configured %s\n",
           rill_version_str(), running, (unsigned)rd_kafka_version(), header, want);
    int ok = 1;
    if (strcmp(running, want)) {
        fprintf(stderr, "FAIL: librdkafka %s is running, the build was configured with %s\n",
                running, want);
        ok = 0;
    }
    if (strcmp(header, want)) {
        fprintf(stderr, "FAIL: compiled against librdkafka.h %s, configured with %s\n", header,
                want);
        ok = 0;
    }
    return ok ? 0 : 1;
}
