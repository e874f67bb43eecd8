#include "l4q/export/report.h"

#include <nlohmann/json.hpp>

namespace l4q {

std::string ExportReport::to_json() const {
  nlohmann::json j = {{"format", format},
                      {"source", source},
                      {"path", path},
                      {"bytes", bytes},
                      {"quantized_layers", quantized_layers},
                      {"float_layers", float_layers},
                      {"max_weight_error", max_weight_error},
                      {"max_scale_error", max_scale_error},
                      {"max_offset_error", max_offset_error},
                      {"notes", notes}};
  return j.dump(2);
}

}  // namespace l4q
