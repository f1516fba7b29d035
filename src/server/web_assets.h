// The web page's files (src/server/web/), compiled into the program so that `sa2va serve` needs
// nothing beside it. The build generates the definitions from the files (cmake/embed_web.cmake).
#pragma once
#include <cstddef>

namespace sa2va::server {

struct WebAsset {
  const char* path;          // URL path: "/" for index.html, else "/<file>"
  const char* content_type;  // with charset for text
  const unsigned char* data;
  size_t size;
};

extern const WebAsset kWebAssets[];
extern const size_t kWebAssetCount;

}  // namespace sa2va::server
