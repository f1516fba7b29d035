#include "io/mask_io.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <utility>

#include "core/error.h"

namespace sa2va {
namespace {

void check_mask(const MaskView& mask, const char* what) {
  check(mask.height >= 0 && mask.width >= 0 && (mask.data != nullptr || mask.height * mask.width == 0),
        std::string(what) + ": invalid mask");
}

// Characters of the compressed counts string: 6 bits each, offset by '0'.
constexpr int kCharOffset = 48;
constexpr int kMaxGroups = 7;  // 35 bits hold any difference of two 32-bit counts

}  // namespace

CocoRle rle_encode(const MaskView& mask) {
  check_mask(mask, "rle_encode");
  CocoRle rle;
  rle.height = mask.height;
  rle.width = mask.width;
  bool previous = false;  // runs start with zeros
  uint32_t run = 0;
  for (int x = 0; x < mask.width; ++x) {
    for (int y = 0; y < mask.height; ++y) {
      bool inside = mask.at(y, x);
      if (inside != previous) {
        rle.counts.push_back(run);
        run = 0;
        previous = inside;
      }
      ++run;
    }
  }
  rle.counts.push_back(run);
  return rle;
}

std::vector<uint8_t> rle_decode(const CocoRle& rle) {
  check(rle.height >= 0 && rle.width >= 0, "COCO RLE: negative size");
  const uint64_t total = static_cast<uint64_t>(rle.height) * rle.width;
  uint64_t covered = 0;
  for (uint32_t count : rle.counts) covered += count;
  check(covered == total, "COCO RLE: the counts cover " + std::to_string(covered) + " pixels, the mask " +
                              std::to_string(rle.height) + "x" + std::to_string(rle.width) + " has " +
                              std::to_string(total));
  std::vector<uint8_t> mask(total, 0);
  uint64_t position = 0;  // column-major pixel index
  for (size_t i = 0; i < rle.counts.size(); ++i) {
    const bool inside = i % 2 == 1;
    for (uint32_t k = 0; k < rle.counts[i]; ++k, ++position) {
      if (!inside) continue;
      const uint64_t x = position / rle.height, y = position % rle.height;
      mask[y * rle.width + x] = 1;
    }
  }
  return mask;
}

std::string rle_counts_to_string(const std::vector<uint32_t>& counts) {
  std::string text;
  for (size_t i = 0; i < counts.size(); ++i) {
    int64_t value = counts[i];
    if (i > 2) value -= counts[i - 2];
    bool more = true;
    while (more) {
      int group = static_cast<int>(value & 0x1f);
      value >>= 5;  // arithmetic shift: negatives end at -1
      more = (group & 0x10) ? value != -1 : value != 0;
      if (more) group |= 0x20;
      text.push_back(static_cast<char>(group + kCharOffset));
    }
  }
  return text;
}

std::vector<uint32_t> rle_counts_from_string(const std::string& text) {
  std::vector<uint32_t> counts;
  size_t p = 0;
  while (p < text.size()) {
    int64_t value = 0;
    int groups = 0;
    bool more = true;
    while (more) {
      check(p < text.size(), "COCO RLE string: the last value is cut off");
      const int c = static_cast<unsigned char>(text[p]) - kCharOffset;
      check(c >= 0 && c < 64, std::string("COCO RLE string: invalid character '") + text[p] + "' at " +
                                  std::to_string(p));
      check(groups < kMaxGroups, "COCO RLE string: value too long at " + std::to_string(p));
      value |= static_cast<int64_t>(c & 0x1f) << (5 * groups);
      more = (c & 0x20) != 0;
      ++p;
      ++groups;
      if (!more && (c & 0x10)) value -= int64_t{1} << (5 * groups);  // sign-extend the last group
    }
    if (counts.size() > 2) value += counts[counts.size() - 2];
    check(value >= 0 && value <= UINT32_MAX,
          "COCO RLE string: count " + std::to_string(counts.size()) + " out of range (" + std::to_string(value) + ")");
    counts.push_back(static_cast<uint32_t>(value));
  }
  return counts;
}

CocoRle rle_from_polygon(const std::vector<double>& xy, int height, int width) {
  CocoRle rle{height, width, {}};
  const size_t k = xy.size() / 2;
  if (k < 3 || height <= 0 || width <= 0) {
    rle.counts = {static_cast<uint32_t>(std::max(0, height) * std::max(0, width))};
    return rle;
  }
  constexpr double kScale = 5.0;
  for (const double c : xy)
    check(std::isfinite(c) && std::fabs(c) <= kMaxPolygonCoordinate,
          "polygon: coordinate " + std::to_string(c) + " is not a finite value within " +
              std::to_string(static_cast<int64_t>(kMaxPolygonCoordinate)) + " of the origin");
  std::vector<int64_t> x(k + 1), y(k + 1);
  for (size_t j = 0; j < k; ++j) {  // C's (int) conversion truncates toward zero
    x[j] = static_cast<int64_t>(kScale * xy[2 * j] + 0.5);
    y[j] = static_cast<int64_t>(kScale * xy[2 * j + 1] + 0.5);
  }
  x[k] = x[0];
  y[k] = y[0];
  // Dense outline points at 5x resolution, edge by edge.
  std::vector<int64_t> u, v;
  for (size_t j = 0; j < k; ++j) {
    int64_t xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
    const int64_t dx = std::llabs(xe - xs), dy = std::llabs(ys - ye);
    const bool flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) {
      std::swap(xs, xe);
      std::swap(ys, ye);
    }
    if (dx >= dy) {
      const double s = dx ? static_cast<double>(ye - ys) / static_cast<double>(dx) : 0.0;
      for (int64_t d = 0; d <= dx; ++d) {
        const int64_t t = flip ? dx - d : d;
        u.push_back(t + xs);
        v.push_back(static_cast<int64_t>(static_cast<double>(ys) + s * static_cast<double>(t) + 0.5));
      }
    } else {
      const double s = static_cast<double>(xe - xs) / static_cast<double>(dy);
      for (int64_t d = 0; d <= dy; ++d) {
        const int64_t t = flip ? dy - d : d;
        v.push_back(t + ys);
        u.push_back(static_cast<int64_t>(static_cast<double>(xs) + s * static_cast<double>(t) + 0.5));
      }
    }
  }
  // Where the outline crosses a column's centre, back in pixel coordinates: a toggle, column-major.
  std::vector<int64_t> toggles;
  for (size_t j = 1; j < u.size(); ++j) {
    if (u[j] == u[j - 1]) continue;
    double xd = static_cast<double>(u[j] < u[j - 1] ? u[j] : u[j] - 1);
    xd = (xd + 0.5) / kScale - 0.5;
    if (std::floor(xd) != xd || xd < 0 || xd > width - 1) continue;
    double yd = static_cast<double>(v[j] < v[j - 1] ? v[j] : v[j - 1]);
    yd = (yd + 0.5) / kScale - 0.5;
    yd = yd < 0 ? 0.0 : (yd > height ? static_cast<double>(height) : yd);
    toggles.push_back(static_cast<int64_t>(xd) * height + static_cast<int64_t>(std::ceil(yd)));
  }
  toggles.push_back(static_cast<int64_t>(height) * width);
  std::sort(toggles.begin(), toggles.end());
  std::vector<int64_t> runs{toggles[0]};
  for (size_t j = 1; j < toggles.size(); ++j) runs.push_back(toggles[j] - toggles[j - 1]);
  // Two toggles at one place cancel: the runs around them merge.
  rle.counts.push_back(static_cast<uint32_t>(runs[0]));
  for (size_t j = 1; j < runs.size();) {
    if (runs[j] > 0) {
      rle.counts.push_back(static_cast<uint32_t>(runs[j++]));
    } else if (++j < runs.size()) {
      rle.counts.back() += static_cast<uint32_t>(runs[j++]);
    }
  }
  return rle;
}

std::array<int, 4> mask_bbox(const MaskView& mask) {
  check_mask(mask, "mask_bbox");
  int x0 = mask.width, y0 = mask.height, x1 = -1, y1 = -1;
  for (int y = 0; y < mask.height; ++y) {
    for (int x = 0; x < mask.width; ++x) {
      if (!mask.at(y, x)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x);
      y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  }
  if (x1 < 0) return {0, 0, 0, 0};
  return {x0, y0, x1 - x0 + 1, y1 - y0 + 1};
}

int64_t mask_area(const MaskView& mask) {
  check_mask(mask, "mask_area");
  const size_t n = static_cast<size_t>(mask.height) * mask.width;
  return std::count_if(mask.data, mask.data + n, [](uint8_t v) { return v != 0; });
}

namespace {

// Headings along pixel edges, clockwise on screen (y grows downwards): east, south, west, north.
constexpr int kStepX[4] = {1, 0, -1, 0};
constexpr int kStepY[4] = {0, 1, 0, -1};
constexpr int kEast = 0;

// Marks every pixel of the 8-connected region of the inside pixel (x, y) in `marked`.
void mark_region(const MaskView& mask, int x, int y, std::vector<uint8_t>& marked) {
  const auto index = [&](int px, int py) { return static_cast<size_t>(py) * mask.width + px; };
  std::vector<std::pair<int, int>> pending = {{x, y}};
  marked[index(x, y)] = 1;
  while (!pending.empty()) {
    const auto [px, py] = pending.back();
    pending.pop_back();
    for (int ny = std::max(py - 1, 0); ny <= std::min(py + 1, mask.height - 1); ++ny) {
      for (int nx = std::max(px - 1, 0); nx <= std::min(px + 1, mask.width - 1); ++nx) {
        if (!mask.at(ny, nx) || marked[index(nx, ny)]) continue;
        marked[index(nx, ny)] = 1;
        pending.emplace_back(nx, ny);
      }
    }
  }
}

// The outer boundary of the region whose first pixel in raster order is (x0, y0): walks the pixel
// edges with the region on the right, starting along the top edge of that pixel (nothing above or
// left of it is inside, so this edge faces the outside and the walk never enters a hole).
std::vector<int32_t> trace_outline(const MaskView& mask, int x0, int y0) {
  const auto inside = [&](int x, int y) {
    return x >= 0 && y >= 0 && x < mask.width && y < mask.height && mask.at(y, x);
  };
  // Is the pixel that has corner (x, y) and lies ahead of heading `dir`, on side `side`, inside?
  const auto inside_ahead = [&](int x, int y, int dir, int side) {
    const int qx = kStepX[dir] + kStepX[side], qy = kStepY[dir] + kStepY[side];  // each -1 or 1
    return inside(x + (qx - 1) / 2, y + (qy - 1) / 2);
  };
  std::vector<int32_t> polygon = {x0, y0};  // the first pixel's top-left corner is always a corner
  int x = x0, y = y0, dir = kEast;
  while (true) {
    x += kStepX[dir], y += kStepY[dir];
    if (x == x0 && y == y0) break;
    const int left = (dir + 3) % 4, right = (dir + 1) % 4;
    // Turning left whenever possible carries the walk across a corner where two pixels touch
    // diagonally, so that a region connected only there stays one outline.
    const int next = inside_ahead(x, y, dir, left) ? left : inside_ahead(x, y, dir, right) ? dir : right;
    if (next != dir) polygon.insert(polygon.end(), {x, y});  // straight on: a collinear point
    dir = next;
  }
  return polygon;
}

}  // namespace

std::vector<std::vector<int32_t>> mask_polygons(const MaskView& mask) {
  check_mask(mask, "mask_polygons");
  std::vector<std::vector<int32_t>> polygons;
  std::vector<uint8_t> outlined(static_cast<size_t>(mask.height) * mask.width, 0);  // regions done
  for (int y = 0; y < mask.height; ++y) {
    for (int x = 0; x < mask.width; ++x) {
      if (!mask.at(y, x) || outlined[static_cast<size_t>(y) * mask.width + x]) continue;
      polygons.push_back(trace_outline(mask, x, y));
      mark_region(mask, x, y, outlined);
    }
  }
  return polygons;
}

void save_mask_png(const std::string& path, const MaskView& mask) {
  check(mask.data != nullptr && mask.height > 0 && mask.width > 0, path + ": empty mask");
  std::vector<uint8_t> gray(static_cast<size_t>(mask.height) * mask.width);
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = mask.data[i] ? 255 : 0;
  save_png_gray(path, gray.data(), mask.width, mask.height);
}

std::array<uint8_t, 3> mask_color(int index) {
  // Colours chosen to stay distinguishable from each other (and for most colour-blind readers).
  static constexpr std::array<std::array<uint8_t, 3>, 12> kPalette = {{{230, 25, 75},
                                                                       {60, 180, 75},
                                                                       {0, 130, 200},
                                                                       {255, 225, 25},
                                                                       {245, 130, 48},
                                                                       {145, 30, 180},
                                                                       {70, 240, 240},
                                                                       {240, 50, 230},
                                                                       {210, 245, 60},
                                                                       {0, 128, 128},
                                                                       {170, 110, 40},
                                                                       {128, 0, 0}}};
  index = std::max(index, 0);
  if (index < static_cast<int>(kPalette.size())) return kPalette[index];
  // Beyond the list: hues spaced by the golden ratio never repeat and stay apart.
  const double hue = std::fmod(index * 0.6180339887498949, 1.0) * 6.0;
  const double s = 0.75, v = 0.95;
  const int sector = static_cast<int>(hue);
  const double f = hue - sector;
  const double p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  double r = v, g = t, b = p;
  switch (sector % 6) {
    case 0: r = v, g = t, b = p; break;
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    default: r = v, g = p, b = q; break;
  }
  auto to8 = [](double c) { return static_cast<uint8_t>(std::lround(c * 255)); };
  return {to8(r), to8(g), to8(b)};
}

namespace {

// Inside pixels whose (2r+1) x (2r+1) neighbourhood lies entirely inside the mask and the image:
// a square erosion done as a horizontal then a vertical pass with running counts.
std::vector<uint8_t> erode(const MaskView& mask, int r) {
  const int h = mask.height, w = mask.width;
  std::vector<uint8_t> horizontal(static_cast<size_t>(h) * w, 0), eroded(horizontal.size(), 0);
  for (int y = 0; y < h; ++y) {
    int run = 0;  // consecutive inside pixels ending at x
    std::vector<int> run_end(w);
    for (int x = 0; x < w; ++x) run_end[x] = run = mask.at(y, x) ? run + 1 : 0;
    for (int x = r; x + r < w; ++x) horizontal[static_cast<size_t>(y) * w + x] = run_end[x + r] >= 2 * r + 1;
  }
  for (int x = 0; x < w; ++x) {
    int run = 0;
    std::vector<int> run_end(h);
    for (int y = 0; y < h; ++y) run_end[y] = run = horizontal[static_cast<size_t>(y) * w + x] ? run + 1 : 0;
    for (int y = r; y + r < h; ++y) eroded[static_cast<size_t>(y) * w + x] = run_end[y + r] >= 2 * r + 1;
  }
  return eroded;
}

}  // namespace

Image render_overlay(const Image& image, const std::vector<MaskView>& masks, float alpha, int contour_width) {
  check(image.rgb.size() == static_cast<size_t>(image.width) * image.height * 3, "render_overlay: bad image buffer");
  check(alpha >= 0 && alpha <= 1, "render_overlay: alpha must be in [0, 1]");
  check(contour_width >= 0, "render_overlay: negative contour width");
  Image out = image;
  const int weight = static_cast<int>(std::lround(alpha * 256));  // of the colour, out of 256
  for (size_t k = 0; k < masks.size(); ++k) {
    const MaskView& mask = masks[k];
    check_mask(mask, "render_overlay");
    check(mask.height == image.height && mask.width == image.width,
          "render_overlay: mask " + std::to_string(k) + " is " + std::to_string(mask.width) + "x" +
              std::to_string(mask.height) + ", the image " + std::to_string(image.width) + "x" +
              std::to_string(image.height));
    const std::array<uint8_t, 3> color = mask_color(static_cast<int>(k));
    std::vector<uint8_t> interior;
    if (contour_width > 0) interior = erode(mask, contour_width);
    for (int y = 0; y < image.height; ++y) {
      uint8_t* row = out.row(y);
      for (int x = 0; x < image.width; ++x) {
        if (!mask.at(y, x)) continue;
        uint8_t* px = row + 3 * x;
        const bool edge = contour_width > 0 && !interior[static_cast<size_t>(y) * image.width + x];
        for (int c = 0; c < 3; ++c)
          px[c] = edge ? color[c] : static_cast<uint8_t>((px[c] * (256 - weight) + color[c] * weight + 128) >> 8);
      }
    }
  }
  return out;
}

}  // namespace sa2va
