// Files the admin API serves, embedded at build time (cmake/KeygateEmbed.cmake).
#ifndef KEYGATE_SRC_ADMIN_EMBEDDED_H_
#define KEYGATE_SRC_ADMIN_EMBEDDED_H_

#include <span>
#include <string_view>

namespace keygate::admin_internal {

struct EmbeddedFile {
  std::string_view name;  // the file's name, without its directory
  std::string_view data;
};

// src/admin/openapi.json.
std::span<const EmbeddedFile> ApiDocuments();

// src/admin/console/*: the web console's page, script, style sheet and icon.
std::span<const EmbeddedFile> ConsoleFiles();

// src/admin/openapi.json: the OpenAPI 3.1 description of the API.
std::string_view OpenApiDocument();

}  // namespace keygate::admin_internal

#endif  // KEYGATE_SRC_ADMIN_EMBEDDED_H_
