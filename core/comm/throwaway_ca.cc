#include "core/comm/throwaway_ca.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moemesh::comm {

absl::Status GenerateThrowawayCertificates(const std::string& dir,
                                           const std::vector<std::string>& hosts) {
  std::vector<std::string> names = {"DNS:localhost", "IP:127.0.0.1"};
  for (const std::string& host : hosts) {
    if (host.empty() || host == "localhost" || host == "127.0.0.1" || host == "0.0.0.0") continue;
    const bool ip = host.find_first_not_of("0123456789.:") == std::string::npos;
    names.push_back(absl::StrCat(ip ? "IP:" : "DNS:", host));
  }
  {
    std::ofstream ext(dir + "/node.ext");
    ext << "subjectAltName=" << absl::StrJoin(names, ",") << "\n"
        << "basicConstraints=CA:FALSE\n"
        << "keyUsage=digitalSignature,keyEncipherment\n"
        << "extendedKeyUsage=serverAuth,clientAuth\n";
    if (!ext) return absl::InternalError(absl::StrCat("cannot write ", dir, "/node.ext"));
  }
  const std::string q = "'" + dir + "'";
  const std::string script = absl::StrCat(
      "set -e; cd ", q, "; ",
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 "
      "-subj /CN=moemesh-throwaway-ca -keyout ca.key -out ca.pem; ",
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
      "-subj /CN=moemesh-node -keyout node.key -out node.csr; ",
      "openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 "
      "-extfile node.ext -out node.pem; rm -f node.csr ca.srl; chmod 600 ca.key node.key");
  const std::string command = absl::StrCat("sh -c \"", script, "\" > ", q, "/openssl.log 2>&1");
  const int rc = std::system(command.c_str());
  if (rc != 0) {
    std::ifstream log(dir + "/openssl.log");
    std::stringstream text;
    text << log.rdbuf();
    return absl::InternalError(
        absl::StrCat("openssl failed generating certificates in ", dir, ": ", text.str()));
  }
  return absl::OkStatus();
}

}  // namespace moemesh::comm
