// Lookups in the embedded files (embedded.h).

#include "admin/embedded.h"

#include <string_view>

namespace keygate::admin_internal {

std::string_view OpenApiDocument() {
  for (const EmbeddedFile& f : ApiDocuments()) {
    if (f.name == "openapi.json") return f.data;
  }
  return {};
}

}  // namespace keygate::admin_internal
