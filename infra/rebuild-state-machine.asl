{
  "Comment": "dynamodb-es-indexer: rebuild the index from a table export or scan, then swap the alias",
  "StartAt": "Prepare",
  "States": {
    "Prepare": {
      "Type": "Task",
      "Resource": "arn:aws:states:::lambda:invoke",
      "Parameters": {
        "FunctionName": "${RebuildStepsArn}",
        "Payload": {
          "step": "prepare",
          "request.$": "$",
          "execution.$": "$$.Execution.Id"
        }
      },
      "Retry": [
        {
          "ErrorEquals": [
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
            "Lambda.TooManyRequestsException"
          ],
          "IntervalSeconds": 2,
          "MaxAttempts": 6,
          "BackoffRate": 2.0
        }
      ],
      "Next": "Announce",
      "ResultSelector": {
        "build.$": "$.Payload"
      },
      "ResultPath": "$.prepared",
      "Catch": [
        {
          "ErrorEquals": [
            "States.ALL"
          ],
          "ResultPath": "$.error",
          "Next": "Failed"
        }
      ]
    },
    "Announce": {
      "Type": "Wait",
      "SecondsPath": "$.prepared.build.wait_seconds",
      "Next": "FirstPlan"
    },
    "FirstPlan": {
      "Type": "Pass",
      "Result": {
        "plan": {}
      },
      "ResultPath": "$.planned",
      "Next": "Plan"
    },
    "Plan": {
      "Type": "Task",
      "Resource": "arn:aws:states:::lambda:invoke",
      "Parameters": {
        "FunctionName": "${RebuildStepsArn}",
        "Payload": {
          "step": "plan",
          "build.$": "$.prepared.build",
          "plan.$": "$.planned.plan"
        }
      },
      "Retry": [
        {
          "ErrorEquals": [
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
            "Lambda.TooManyRequestsException"
          ],
          "IntervalSeconds": 2,
          "MaxAttempts": 6,
          "BackoffRate": 2.0
        }
      ],
      "Next": "Planned?",
      "ResultSelector": {
        "plan.$": "$.Payload"
      },
      "ResultPath": "$.planned",
      "Catch": [
        {
          "ErrorEquals": [
            "States.ALL"
          ],
          "ResultPath": "$.error",
          "Next": "Abandon"
        }
      ]
    },
    "Planned?": {
      "Type": "Choice",
      "Choices": [
        {
          "Variable": "$.planned.plan.ready",
          "BooleanEquals": true,
          "Next": "Load"
        }
      ],
      "Default": "ExportWait"
    },
    "ExportWait": {
      "Type": "Wait",
      "SecondsPath": "$.planned.plan.wait_seconds",
      "Next": "Plan"
    },
    "Load": {
      "Type": "Map",
      "ItemReader": {
        "Resource": "arn:aws:states:::s3:getObject",
        "ReaderConfig": {
          "InputType": "JSON"
        },
        "Parameters": {
          "Bucket.$": "$.planned.plan.units_bucket",
          "Key.$": "$.planned.plan.units_key"
        }
      },
      "ItemSelector": {
        "unit.$": "$$.Map.Item.Value",
        "build.$": "$.prepared.build",
        "totals": {
          "read": 0,
          "created": 0,
          "stale": 0,
          "refused": 0
        }
      },
      "MaxConcurrency": ${RebuildMaxConcurrency},
      "ToleratedFailureCount": 0,
      "ResultWriter": {
        "Resource": "arn:aws:states:::s3:putObject",
        "Parameters": {
          "Bucket": "${RebuildBucket}",
          "Prefix": "rebuilds/results"
        }
      },
      "ItemProcessor": {
        "ProcessorConfig": {
          "Mode": "DISTRIBUTED",
          "ExecutionType": "STANDARD"
        },
        "StartAt": "LoadUnit",
        "States": {
          "LoadUnit": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {
              "FunctionName": "${RebuildWorkerArn}",
              "Payload": {
                "unit.$": "$.unit",
                "build.$": "$.build",
                "totals.$": "$.totals"
              }
            },
            "Retry": [
              {
                "ErrorEquals": [
                  "Lambda.ServiceException",
                  "Lambda.AWSLambdaException",
                  "Lambda.SdkClientException",
                  "Lambda.TooManyRequestsException"
                ],
                "IntervalSeconds": 2,
                "MaxAttempts": 6,
                "BackoffRate": 2.0
              }
            ],
            "Next": "More?",
            "OutputPath": "$.Payload"
          },
          "More?": {
            "Type": "Choice",
            "Choices": [
              {
                "Variable": "$.unit",
                "IsNull": false,
                "Next": "LoadUnit"
              }
            ],
            "Default": "UnitLoaded"
          },
          "UnitLoaded": {
            "Type": "Pass",
            "OutputPath": "$.totals",
            "End": true
          }
        }
      },
      "ResultPath": "$.loaded",
      "Catch": [
        {
          "ErrorEquals": [
            "States.ALL"
          ],
          "ResultPath": "$.error",
          "Next": "Abandon"
        }
      ],
      "Next": "Finish"
    },
    "Finish": {
      "Type": "Task",
      "Resource": "arn:aws:states:::lambda:invoke",
      "Parameters": {
        "FunctionName": "${RebuildStepsArn}",
        "Payload": {
          "step": "finish",
          "build.$": "$.prepared.build",
          "plan.$": "$.planned.plan",
          "loaded.$": "$.loaded"
        }
      },
      "Retry": [
        {
          "ErrorEquals": [
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
            "Lambda.TooManyRequestsException"
          ],
          "IntervalSeconds": 2,
          "MaxAttempts": 6,
          "BackoffRate": 2.0
        }
      ],
      "Next": "Done",
      "ResultSelector": {
        "report.$": "$.Payload"
      },
      "ResultPath": "$.finished",
      "Catch": [
        {
          "ErrorEquals": [
            "States.ALL"
          ],
          "ResultPath": "$.error",
          "Next": "Abandon"
        }
      ]
    },
    "Done": {
      "Type": "Succeed"
    },
    "Abandon": {
      "Type": "Task",
      "Resource": "arn:aws:states:::lambda:invoke",
      "Parameters": {
        "FunctionName": "${RebuildStepsArn}",
        "Payload": {
          "step": "abandon",
          "build.$": "$.prepared.build",
          "error.$": "$.error"
        }
      },
      "Retry": [
        {
          "ErrorEquals": [
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
            "Lambda.TooManyRequestsException"
          ],
          "IntervalSeconds": 2,
          "MaxAttempts": 6,
          "BackoffRate": 2.0
        }
      ],
      "Next": "Failed",
      "ResultPath": "$.abandoned",
      "Catch": [
        {
          "ErrorEquals": [
            "States.ALL"
          ],
          "ResultPath": "$.abandon_error",
          "Next": "Failed"
        }
      ]
    },
    "Failed": {
      "Type": "Fail",
      "Error": "RebuildFailed",
      "Cause": "the rebuild did not finish; the alias was not moved"
    }
  }
}
