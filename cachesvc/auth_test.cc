#include "cachesvc/auth.h"

#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cachesvc/reloadable_auth.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvhub::cachesvc {
namespace {

using ::testing::HasSubstr;

absl::string_view Bearer(const std::string& s) { return s; }

TEST(AuthenticatorTest, ParsesTokensAndScopesThemToNamespaces) {
  auto a = Authenticator::Parse(
      "# comment\n\n  tenant-token-0123456789\ttenant-a,tenant-b  \nops-token-0123456789abcdef *\n", "tokens");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->size(), 2u);
  const std::string tenant = "Bearer tenant-token-0123456789";
  const absl::string_view tv = Bearer(tenant);
  auto g = (*a)->Authenticate(&tv);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_FALSE((*g)->all_namespaces);
  EXPECT_TRUE((*g)->AllowsNamespace("tenant-a").ok());
  EXPECT_TRUE((*g)->AllowsNamespace("tenant-b").ok());
  const absl::Status denied = (*g)->AllowsNamespace("tenant-c");
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(denied.message()), HasSubstr("'tenant-c'"));
  EXPECT_THAT(std::string(denied.message()), HasSubstr("line 3"));
  const std::string ops = "Bearer ops-token-0123456789abcdef";
  const absl::string_view ov = Bearer(ops);
  g = (*a)->Authenticate(&ov);
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE((*g)->all_namespaces);
  EXPECT_TRUE((*g)->AllowsNamespace("anything").ok());
}

TEST(AuthenticatorTest, AcceptsAByteOrderMarkAndCrlfLineEnds) {
  auto a = Authenticator::Parse("\xEF\xBB\xBF" "win-token-0123456789 *\r\n", "tokens");
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string token = "Bearer win-token-0123456789";
  const absl::string_view tv = Bearer(token);
  EXPECT_TRUE((*a)->Authenticate(&tv).ok());
}

TEST(AuthenticatorTest, RefusesMissingMalformedAndUnknownTokens) {
  auto a = Authenticator::Parse("ops-token-0123456789abcdef *\n", "tokens");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->Authenticate(nullptr).status().code(), absl::StatusCode::kUnauthenticated);
  for (const std::string v : {"ops-token-0123456789abcdef", "Basic ops-token-0123456789abcdef",
                              "Bearer ops-token-0123456789abcdeF", "Bearer ", "Bearer  ops-token-0123456789abcdef"}) {
    SCOPED_TRACE(v);
    const absl::string_view sv = v;
    EXPECT_EQ((*a)->Authenticate(&sv).status().code(), absl::StatusCode::kUnauthenticated);
  }
}

TEST(AuthenticatorTest, MalformedFilesNameTheLine) {
  const struct {
    const char* text;
    const char* why;
  } cases[] = {
      {"ops-token-0123456789abcdef\n", "tokens:1: want 'TOKEN NAMESPACES'"},
      {"# a\nshort ns\n", "tokens:2: a token must be 16..512 bytes"},
      {"ops-token-0123456789abcdef a b\n", "tokens:1: want"},
      {"ops-token-0123456789abcdef a,,b\n", "tokens:1: namespace"},
      {"ops-token-0123456789abcdef *\nops-token-0123456789abcdef x\n", "tokens:2: this token is listed twice"},
      {"ops-token-0123456789abcdef *,tenant-a\n", "tokens:1: '*' (every namespace) stands alone"},
      {"# only comments\n\n", "no token"},
      {"ops-token-0123456789abc\x01 *\n", "printable ASCII"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    auto a = Authenticator::Parse(c.text, "tokens");
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(a.status().message()), HasSubstr(c.why));
  }
  EXPECT_EQ(ReloadableAuthenticator::FromFile("/nonexistent/kvhub-tokens").status().code(),
            absl::StatusCode::kNotFound);
}

void WriteTokens(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp, std::ios::trunc) << text;
  ASSERT_EQ(std::rename(tmp.c_str(), path.c_str()), 0);  // as Kubernetes swaps a secret: whole or nothing
}

bool Accepts(const ReloadableAuthenticator& r, absl::string_view token) {
  const std::string header = absl::StrCat("Bearer ", token);
  const absl::string_view value = header;
  return r.Current()->Authenticate(&value).ok();
}

TEST(ReloadableAuthenticatorTest, ReloadInstallsAWholeNewFileOrNothing) {
  const std::string path = ::testing::TempDir() + "/kvhub-reload-tokens";
  const std::string a = "tenant-a-token-0123456789", b = "tenant-b-token-0123456789";
  WriteTokens(path, absl::StrCat(a, " tenant-a\n"));
  auto r = ReloadableAuthenticator::FromFile(path);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(Accepts(**r, a));
  auto unchanged = (*r)->Reload();
  ASSERT_TRUE(unchanged.ok());
  EXPECT_FALSE(*unchanged);

  // A grant handed out before a reload stays valid for the call holding it.
  std::shared_ptr<const Authenticator> before = (*r)->Current();
  WriteTokens(path, absl::StrCat("# a rotated, b added\n", b, " tenant-b\n"));
  auto changed = (*r)->Reload();
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_TRUE(*changed);
  EXPECT_FALSE(Accepts(**r, a));
  EXPECT_TRUE(Accepts(**r, b));
  EXPECT_EQ(before->size(), 1u);

  // A broken file, or none, leaves the tokens in force.
  WriteTokens(path, absl::StrCat(b, "\n"));
  auto broken = (*r)->Reload();
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(broken.status().message()), HasSubstr(path + ":1"));
  EXPECT_TRUE(Accepts(**r, b));
  std::remove(path.c_str());
  EXPECT_EQ((*r)->Reload().status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Accepts(**r, b));
  // Fixed again: in force at the next reload. The hook sees the new tokens while
  // the old still answer calls (kvhubd closes revoked tokens' UCX connections there,
  // so none is open once the new tokens are in force).
  WriteTokens(path, absl::StrCat(a, " *\n"));
  bool hooked = false;
  ASSERT_TRUE((*r)->Reload([&](const Authenticator& next) {
                     hooked = true;
                     EXPECT_TRUE(Accepts(**r, b)) << "the new tokens were in force before the hook ran";
                     EXPECT_EQ(next.size(), 1u);
                   }).ok());
  EXPECT_TRUE(hooked);
  EXPECT_TRUE(Accepts(**r, a));
  EXPECT_FALSE(Accepts(**r, b));
  // A blank file (a rewrite caught half done) keeps the tokens; the last token
  // commented out revokes it: nobody is let in (it stayed in force before, so a
  // leaked sole token could not be revoked without a restart). A start with no
  // token is still refused.
  WriteTokens(path, " \n");
  EXPECT_THAT(std::string((*r)->Reload().status().message()), HasSubstr("leave a comment line"));
  EXPECT_TRUE(Accepts(**r, a));
  WriteTokens(path, absl::StrCat("# ", a, " *\n"));
  auto none = (*r)->Reload();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(*none);
  EXPECT_EQ((*r)->Current()->size(), 0u);
  EXPECT_FALSE(Accepts(**r, a));
  EXPECT_EQ(ReloadableAuthenticator::FromFile(path).status().code(), absl::StatusCode::kInvalidArgument);
  std::remove(path.c_str());
}

// Callers hold grants (as the service does: aliasing the token set) while the set is
// replaced underneath them; ASan (make asan) sees any grant that outlives its set.
TEST(ReloadableAuthenticatorTest, GrantsStayValidWhileReloadsRun) {
  const std::string path = ::testing::TempDir() + "/kvhub-reload-race-tokens";
  const std::string token = "shared-token-0123456789abcdef";
  const std::string files[2] = {absl::StrCat(token, " tenant-a,tenant-b\n"),
                                absl::StrCat("# rotated\n", token, " tenant-a,tenant-b\nother-token-0123456789 x\n")};
  WriteTokens(path, files[0]);
  auto r = ReloadableAuthenticator::FromFile(path);
  ASSERT_TRUE(r.ok()) << r.status();
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      const std::string header = absl::StrCat("Bearer ", token);
      const absl::string_view value = header;
      std::vector<std::shared_ptr<const AuthGrant>> held;
      while (!stop.load()) {
        std::shared_ptr<const Authenticator> tokens = (*r)->Current();
        absl::StatusOr<const AuthGrant*> g = tokens->Authenticate(&value);
        if (!g.ok()) {
          ++bad;
          continue;
        }
        held.push_back(std::shared_ptr<const AuthGrant>(tokens, *g));
        if (held.size() > 64) held.erase(held.begin());
        for (const auto& h : held) {
          if (!h->AllowsNamespace("tenant-b").ok()) ++bad;
        }
      }
    });
  }
  for (int i = 0; i < 200; ++i) {
    WriteTokens(path, files[(i + 1) % 2]);
    auto changed = (*r)->Reload();
    ASSERT_TRUE(changed.ok()) << changed.status();
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kvhub::cachesvc
