// pgjdbc client for tests/integration/test_rules_masking.py: runs one query as
// a PreparedStatement several times per connection and prints rows as TSV.
//
// usage: java -cp DIR:/usr/share/java/postgresql.jar RulesQuery SQL REPS SPEC...
//   SPEC = label|jdbc-url|user   (the URL carries prepareThreshold, binaryTransfer
//                                  and options=-c pgveil.purpose=...)
// Output, per SPEC and run r: "label<TAB>#run<TAB>r", "label<TAB>#class<TAB>..."
// (Java classes of getObject() of the first row), then "label<TAB>row<TAB>v1<TAB>..."
// with NULL as \N and tab, newline and backslash escaped as in COPY text.
// An SQLException prints "label<TAB>#error<TAB>SQLSTATE<TAB>message" and the
// next SPEC runs.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.Properties;

public final class RulesQuery {
    private RulesQuery() {}

    private static String esc(String s) {
        if (s == null) {
            return "\\N";
        }
        return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r");
    }

    private static void runSpec(String sql, int reps, String spec) throws SQLException {
        String[] p = spec.split("\\|", -1);
        String label = p[0];
        Properties props = new Properties();
        props.setProperty("user", p[2]);
        try (Connection c = DriverManager.getConnection(p[1], props);
             PreparedStatement ps = c.prepareStatement(sql)) {
            for (int r = 0; r < reps; r++) {
                System.out.println(label + "\t#run\t" + r);
                try (ResultSet rs = ps.executeQuery()) {
                    int n = rs.getMetaData().getColumnCount();
                    boolean first = true;
                    while (rs.next()) {
                        if (first) {
                            StringBuilder cls = new StringBuilder(label + "\t#class");
                            for (int i = 1; i <= n; i++) {
                                Object o = rs.getObject(i);
                                cls.append('\t').append(o == null ? "null" : o.getClass().getName());
                            }
                            System.out.println(cls);
                            first = false;
                        }
                        StringBuilder row = new StringBuilder(label + "\trow");
                        for (int i = 1; i <= n; i++) {
                            row.append('\t').append(esc(rs.getString(i)));
                        }
                        System.out.println(row);
                    }
                }
            }
        } catch (SQLException e) {
            System.out.println(label + "\t#error\t" + e.getSQLState() + "\t" + esc(e.getMessage()));
        }
    }

    public static void main(String[] args) throws Exception {
        Class.forName("org.postgresql.Driver");
        String sql = args[0];
        int reps = Integer.parseInt(args[1]);
        for (int i = 2; i < args.length; i++) {
            runSpec(sql, reps, args[i]);
        }
        System.out.flush();
    }
}
