package sensorstream.parse;

import java.util.ArrayList;
import java.util.List;

import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF1;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.catalyst.expressions.UnsafeProjection;
import org.apache.spark.sql.catalyst.expressions.UnsafeProjection$;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.Project;
import org.apache.spark.sql.expressions.UserDefinedFunction;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;

/**
 * The parse's {@code explain} half (jobs/sensorstream/schema.py) as one opaque function of a
 * record's bytes: the very expressions Python builds, optimized once by Spark, evaluated here.
 *
 * <p>Why: a streaming query is optimized and planned again at every micro-batch, and the explain
 * half is most of the parse's expressions, though only the few records that fail the cheap checks
 * need it. Behind a UDF Spark plans one node. Measured (jobs/README.md, "The parse's second half
 * behind one function"): 10 sensors, batches of 50,000, 117 ms less a batch (638 -> 521 ms).
 *
 * <p>Input: {@code plan}, the optimized plan of the explain over a relation with Kafka's columns:
 * projections only, down to that relation. Output: the struct {@code (reason, named,
 * value_base64)} that plan's one column holds for a record whose value is the given bytes.
 */
public final class Explainer implements UDF1<byte[], Row> {
  public static final StructType EXPLAINED = new StructType()
      .add("reason", DataTypes.StringType)
      .add("named", DataTypes.StringType)
      .add("value_base64", DataTypes.StringType);

  private final List<Seq<Expression>> levels = new ArrayList<>();  // bottom-up
  private final List<Seq<Attribute>> inputs = new ArrayList<>();
  private final int valueIndex;
  private final int width;
  private transient UnsafeProjection[] projections;  // made once per executor JVM

  /** The explain as a UDF of the record's value (binary), returning {@link #EXPLAINED}. */
  public static UserDefinedFunction function(LogicalPlan plan) {
    return functions.udf(new Explainer(plan), EXPLAINED);
  }

  @SuppressWarnings("unchecked")
  private Explainer(LogicalPlan plan) {
    LogicalPlan node = plan;
    while (node instanceof Project) {
      Project project = (Project) node;
      levels.add(0, (Seq<Expression>) (Seq<?>) project.projectList());
      inputs.add(0, (Seq<Attribute>) project.child().output());
      node = project.child();
    }
    if (levels.isEmpty() || !node.children().isEmpty()) {
      throw new IllegalArgumentException("not projections over one relation: " + plan.treeString());
    }
    if (!plan.schema().fields()[0].dataType().sameType(EXPLAINED)) {
      throw new IllegalArgumentException("the plan's first column is not " + EXPLAINED.simpleString());
    }
    List<Attribute> leaf = CollectionConverters.asJava(node.output());
    int found = -1;
    for (int i = 0; i < leaf.size(); i++) {
      if (leaf.get(i).name().equals("value")) {
        found = i;
      }
    }
    if (found < 0) {
      throw new IllegalArgumentException("the relation has no column value: " + leaf);
    }
    valueIndex = found;
    width = leaf.size();
  }

  @Override
  public Row call(byte[] value) {
    if (projections == null) {
      UnsafeProjection[] made = new UnsafeProjection[levels.size()];
      for (int i = 0; i < made.length; i++) {
        made[i] = UnsafeProjection$.MODULE$.create(levels.get(i), inputs.get(i));
      }
      projections = made;
    }
    Object[] values = new Object[width];  // the record's other columns: the explain reads none
    values[valueIndex] = value;
    InternalRow row = new GenericInternalRow(values);
    for (UnsafeProjection projection : projections) {
      row = projection.apply(row);
    }
    InternalRow explained = row.getStruct(0, EXPLAINED.size());
    return RowFactory.create(text(explained, 0), text(explained, 1), text(explained, 2));
  }

  private static String text(InternalRow row, int i) {
    return row.isNullAt(i) ? null : row.getUTF8String(i).toString();
  }
}
