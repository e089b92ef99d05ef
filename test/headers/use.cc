/*
 * A C++ program's use of rill's public headers (see check.sh): the
 * initializer macros and constants compile as C++ (-std=c++20, -pedantic),
 * and the functions are declared extern "C" (check.sh reads the object's
 * undefined symbols: they must not be C++-mangled).
 */
#include <rill/rill.h>
#include <rill/testkit.h>
#include <rill/version.h>

int rill_header_use(void);

int rill_header_use(void)
{
    rill_aid_t none = RILL_AID_NONE;
    rill_sup_spec_t spec = RILL_SUP_SPEC_DEFAULT;
    rill_gen_t gen = RILL_GEN_DEFAULT;
    rill_child_spec_t child = RILL_CHILD_PIPELINE("p", nullptr);
    int32_t any = RILL_PARTITION_ANY + RILL_BROKER_ALL;
    int64_t off = RILL_OFFSET_COMMITTED + RILL_OFFSET_BEGINNING + RILL_OFFSET_END;
    const char *v = rill_version_str();
    const char *e = rill_err2str(RILL_EINVAL);
    return (int)none.id + spec.intensity + (int)gen.value_size + (child.id != nullptr) + any +
           (int)off + (v != nullptr) + (e != nullptr) + RILL_VERSION_MAJOR +
           rill_aid_eq(none, RILL_AID_NONE) + RILL_EXECUTOR(RILL_EXECUTOR_ANY);
}
